// tcompress._cuda bindings of the qlinear_a8 kernels (filled in by the qlinear_a8 kernel work).
#include "register.h"

namespace tcompress_bindings {

void bind_cuda_qlinear_a8(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
