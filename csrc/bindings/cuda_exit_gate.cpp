// tcompress._cuda bindings of the exit_gate kernels (filled in by the exit_gate kernel work).
#include "register.h"

namespace tcompress_bindings {

void bind_cuda_exit_gate(pybind11::module_& m) { (void)m; }

}  // namespace tcompress_bindings
