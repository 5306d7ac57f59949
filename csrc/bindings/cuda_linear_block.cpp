// tcompress._cuda bindings of the linear_block kernels (filled in by the linear_block kernel work).
#include "register.h"

namespace tcompress_bindings {

void bind_cuda_linear_block(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
