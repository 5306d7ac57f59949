// Each kernel family binds its functions in its own file; the module definitions call these.
#pragma once

#include <pybind11/pybind11.h>

namespace tcompress_bindings {

// tcompress._C (cpu_*.cpp)
void bind_cpu_quant(pybind11::module_& m);
void bind_cpu_qlinear(pybind11::module_& m);
void bind_cpu_qlinear_a8(pybind11::module_& m);
void bind_cpu_linear_block(pybind11::module_& m);
void bind_cpu_exit_gate(pybind11::module_& m);
void bind_cpu_decode(pybind11::module_& m);

// tcompress._cuda (cuda_*.cpp)
void bind_cuda_quant(pybind11::module_& m);
void bind_cuda_qlinear(pybind11::module_& m);
void bind_cuda_qlinear_a8(pybind11::module_& m);
void bind_cuda_linear_block(pybind11::module_& m);
void bind_cuda_exit_gate(pybind11::module_& m);

}  // namespace tcompress_bindings
