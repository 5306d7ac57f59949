// tcompress._cuda bindings of the qlinear_a8 kernels (see tcompress/qlinear_a8_cuda.h).
#include <cstdint>
#include <sstream>
#include <string>

#include "cuda_status_error.h"
#include "register.h"
#include "tcompress/qlinear_a8_cuda.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

void qlinear_a8(uintptr_t x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t qweight, int64_t N,
                int bits, uintptr_t scales, int scale_dtype, uintptr_t zeros, int64_t group_size, int act_bits,
                int act_per_group, uintptr_t bias, int bias_dtype, uintptr_t y, int64_t y_row_stride, int device,
                uintptr_t stream) {
  // The argument list of the CPU entry point (the Python layer builds one for both); the CUDA kernel quantizes
  // activations per token only, and tcompress.ops runs the reference for per-group scales on CUDA.
  if (act_per_group != 0) {
    throw py::value_error("tcompress._cuda.qlinear_a8: per-group activation scales (act_per_group=" +
                          std::to_string(act_per_group) + ") have no CUDA kernel; expected 0 (per token)");
  }
  int status;
  {
    py::gil_scoped_release release;
    status = tc_qlinear_a8_cuda(reinterpret_cast<const void*>(x), x_dtype, M, K, x_row_stride,
                                reinterpret_cast<const uint8_t*>(qweight), N, bits,
                                reinterpret_cast<const void*>(scales), scale_dtype,
                                reinterpret_cast<const uint8_t*>(zeros), group_size, act_bits,
                                reinterpret_cast<const void*>(bias), bias_dtype, reinterpret_cast<void*>(y),
                                y_row_stride, device, reinterpret_cast<void*>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.qlinear_a8(M=" << M << ", K=" << K << ", N=" << N << ", bits=" << bits
        << ", group_size=" << group_size << ", act_bits=" << act_bits << ", device=" << device
        << ", x_dtype=" << x_dtype << ")";
    raise_cuda_status(status, ctx.str());
  }
}

}  // namespace

void bind_cuda_qlinear_a8(pybind11::module_& m) {
  m.def("qlinear_a8", &qlinear_a8, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("K"),
        py::arg("x_row_stride"), py::arg("qweight"), py::arg("N"), py::arg("bits"), py::arg("scales"),
        py::arg("scale_dtype"), py::arg("zeros"), py::arg("group_size"), py::arg("act_bits"),
        py::arg("act_per_group"), py::arg("bias"), py::arg("bias_dtype"), py::arg("y"), py::arg("y_row_stride"),
        py::arg("device"), py::arg("stream"),
        "y = Q(x) @ (u - z)^T scaled per group and per token, + bias, on `device`, enqueued on `stream` (see "
        "tcompress/qlinear_a8_cuda.h). Releases the GIL.");
}

}  // namespace tcompress_bindings
