// tcompress._cuda: the CUDA kernels. Compiled by the host compiler and linked against a static library that nvcc
// built (csrc/cuda), so nvcc never sees pybind11. Imports on a machine without a GPU or driver: device_count()
// then answers 0 and status() says why.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "tcompress/cuda_device.h"
#include "tcompress/hadamard.h"
#include "tcompress/hadamard_cuda.h"
#include "tcompress/status.h"
#include "cuda_status_error.h"
#include "register.h"

namespace py = pybind11;

namespace {

using tcompress_bindings::raise_cuda_status;

void hadamard(uintptr_t x, uintptr_t out, int64_t rows, int64_t n, int64_t x_row_stride, int64_t out_row_stride,
              int dtype, uintptr_t hk, int64_t k, double scale, int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_hadamard_cuda(reinterpret_cast<const void*>(x), reinterpret_cast<void*>(out), rows, n, x_row_stride,
                              out_row_stride, dtype, reinterpret_cast<const float*>(hk), k, static_cast<float>(scale),
                              device, reinterpret_cast<void*>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.hadamard(rows=" << rows << ", n=" << n << ", k=" << k << ", device=" << device
        << ", dtype=" << dtype << ")";
    raise_cuda_status(status, ctx.str());
  }
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "tcompress CUDA kernels (torch-free: device pointers, sizes, strides, dtype codes, stream handles)";
  m.attr("FLOAT32") = int(TC_FLOAT32);
  m.attr("FLOAT16") = int(TC_FLOAT16);
  m.attr("BFLOAT16") = int(TC_BFLOAT16);
  m.attr("HADAMARD_MAX_K") = int(TC_HADAMARD_MAX_K);
  m.def("device_count", &tc_cuda_device_count, "Usable CUDA devices (0 when there is no GPU or no driver)");
  m.def("status", [] {
    tc_cuda_device_count();
    return std::string(tc_cuda_status_string());
  }, "'ok', or why there is no CUDA device");
  m.def("runtime_version", &tc_cuda_runtime_version, "CUDA runtime version this module was built with (e.g. 13000)");
  m.def("hadamard_max_n", &tc_hadamard_max_n_cuda, py::arg("device"), "Longest row the kernel handles on a device");
  m.def("hadamard", &hadamard, py::arg("x"), py::arg("out"), py::arg("rows"), py::arg("n"), py::arg("x_row_stride"),
        py::arg("out_row_stride"), py::arg("dtype"), py::arg("hk"), py::arg("k"), py::arg("scale"), py::arg("device"),
        py::arg("stream"),
        "out[r] = scale * x[r] @ kron(H_k, H_{n/k}) on `device`, enqueued on `stream` (a cudaStream_t as an int). "
        "Releases the GIL.");

  tcompress_bindings::bind_cuda_quant(m);
  tcompress_bindings::bind_cuda_qlinear(m);
  tcompress_bindings::bind_cuda_qlinear_a8(m);
  tcompress_bindings::bind_cuda_linear_block(m);
  tcompress_bindings::bind_cuda_exit_gate(m);
}
