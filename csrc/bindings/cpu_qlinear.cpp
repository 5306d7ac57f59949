// tcompress._C bindings of the qlinear kernels (see tcompress/qlinear.h).
#include <cstdint>
#include <sstream>

#include "register.h"
#include "status_error.h"
#include "tcompress/qlinear.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

void qlinear(uintptr_t x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t qweight, int64_t N,
             int bits, uintptr_t scales, int scale_dtype, uintptr_t zeros, int64_t group_size, uintptr_t bias,
             int bias_dtype, uintptr_t y, int64_t y_row_stride, int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_qlinear_cpu(reinterpret_cast<const void*>(x), x_dtype, M, K, x_row_stride,
                            reinterpret_cast<const uint8_t*>(qweight), N, bits, reinterpret_cast<const void*>(scales),
                            scale_dtype, reinterpret_cast<const uint8_t*>(zeros), group_size,
                            reinterpret_cast<const void*>(bias), bias_dtype, reinterpret_cast<void*>(y), y_row_stride,
                            num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.qlinear(M=" << M << ", K=" << K << ", N=" << N << ", bits=" << bits
        << ", group_size=" << group_size << ", x_row_stride=" << x_row_stride << ", y_row_stride=" << y_row_stride
        << ", x_dtype=" << x_dtype << ", scale_dtype=" << scale_dtype << ")";
    raise_status(status, ctx.str());
  }
}

}  // namespace

void bind_cpu_qlinear(pybind11::module_& m) {
  m.attr("QLINEAR_GEMV_MAX_M") = int(TC_QLINEAR_GEMV_MAX_M);
  m.def("qlinear", &qlinear, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"),
        py::arg("qweight"), py::arg("N"), py::arg("bits"), py::arg("scales"), py::arg("scale_dtype"), py::arg("zeros"),
        py::arg("group_size"), py::arg("bias"), py::arg("bias_dtype"), py::arg("y"), py::arg("y_row_stride"),
        py::arg("num_threads"),
        "y[m] = x[m] @ dequant(W)^T + bias for M rows (see tcompress/qlinear.h); pointers as integers, 0 for "
        "none. Releases the GIL.");
}

}  // namespace tcompress_bindings
