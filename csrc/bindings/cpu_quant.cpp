// tcompress._C bindings of the quant kernels (see tcompress/quant.h).
#include "register.h"
#include "status_error.h"

namespace tcompress_bindings {

void bind_cpu_quant(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
