// tcompress._cuda bindings of the quant kernels (see tcompress/quant_cuda.h).
#include "register.h"

namespace tcompress_bindings {

void bind_cuda_quant(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
