// tcompress._cuda bindings of the qlinear kernels (see tcompress/qlinear_cuda.h).
#include "register.h"

namespace tcompress_bindings {

void bind_cuda_qlinear(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
