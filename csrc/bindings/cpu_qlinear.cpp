// tcompress._C bindings of the qlinear kernels (see tcompress/qlinear.h).
#include "register.h"
#include "status_error.h"

namespace tcompress_bindings {

void bind_cpu_qlinear(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
