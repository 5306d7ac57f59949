// tcompress._C bindings of the linear_block kernels (see tcompress/linear_block.h).
#include <cstdint>
#include <sstream>

#include "register.h"
#include "status_error.h"
#include "tcompress/linear_block.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

void linear_block(uintptr_t x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride, uintptr_t U, uintptr_t V,
                  int factor_dtype, int64_t r, uintptr_t u_scale, uintptr_t v_scale, uintptr_t b, int b_dtype,
                  uintptr_t mu, int mu_dtype, uintptr_t y, int64_t y_row_stride, int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_linear_block_cpu(reinterpret_cast<const void*>(x), x_dtype, M, d, x_row_stride,
                                 reinterpret_cast<const void*>(U), reinterpret_cast<const void*>(V), factor_dtype, r,
                                 reinterpret_cast<const float*>(u_scale), reinterpret_cast<const float*>(v_scale),
                                 reinterpret_cast<const void*>(b), b_dtype, reinterpret_cast<const void*>(mu), mu_dtype,
                                 reinterpret_cast<void*>(y), y_row_stride, num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.linear_block(M=" << M << ", d=" << d << ", r=" << r << ", x_dtype=" << x_dtype
        << ", factor_dtype=" << factor_dtype << ", x_row_stride=" << x_row_stride << ", y_row_stride=" << y_row_stride
        << ")";
    raise_status(status, ctx.str());
  }
}

}  // namespace

void bind_cpu_linear_block(pybind11::module_& m) {
  m.attr("LINEAR_BLOCK_GEMV_MAX_M") = int(TC_LINEAR_BLOCK_GEMV_MAX_M);
  m.attr("LINEAR_BLOCK_INT8") = int(TC_LINEAR_BLOCK_INT8);
  m.def("linear_block", &linear_block, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("d"),
        py::arg("x_row_stride"), py::arg("U"), py::arg("V"), py::arg("factor_dtype"), py::arg("r"),
        py::arg("u_scale"), py::arg("v_scale"), py::arg("b"), py::arg("b_dtype"), py::arg("mu"), py::arg("mu_dtype"),
        py::arg("y"), py::arg("y_row_stride"), py::arg("num_threads"),
        "y = x + b + ((x - mu) U) V for M rows (see tcompress/linear_block.h); pointers as integers, 0 for none. "
        "Releases the GIL.");
}

}  // namespace tcompress_bindings
