// tcompress._cuda bindings of the linear_block kernels (see tcompress/linear_block_cuda.h): device pointers, a
// device index and a stream handle in, as integers; status codes turned into Python exceptions out. The call only
// enqueues work on the stream (the fp32 intermediate is allocated and freed in stream order). Releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>

#include "cuda_status_error.h"
#include "register.h"
#include "tcompress/linear_block.h"
#include "tcompress/linear_block_cuda.h"
#include "tcompress/status.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void linear_block(uintptr_t x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride, uintptr_t U, uintptr_t V,
                  int factor_dtype, int64_t r, uintptr_t u_scale, uintptr_t v_scale, uintptr_t b, int b_dtype,
                  uintptr_t mu, int mu_dtype, uintptr_t y, int64_t y_row_stride, int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_linear_block_cuda(ptr<const void>(x), x_dtype, M, d, x_row_stride, ptr<const void>(U),
                                  ptr<const void>(V), factor_dtype, r, ptr<const float>(u_scale),
                                  ptr<const float>(v_scale), ptr<const void>(b), b_dtype, ptr<const void>(mu),
                                  mu_dtype, ptr<void>(y), y_row_stride, device, ptr<void>(stream));
  }
  if (status == TC_OK) return;
  std::ostringstream ctx;
  ctx << "tcompress._cuda.linear_block(M=" << M << ", d=" << d << ", r=" << r << ", x_dtype=" << x_dtype
      << ", factor_dtype=" << factor_dtype << ", x_row_stride=" << x_row_stride << ", y_row_stride=" << y_row_stride
      << ", device=" << device << ")";
  raise_cuda_status(status, ctx.str());  // out of memory -> MemoryError, bad arguments -> ValueError
}

}  // namespace

void bind_cuda_linear_block(pybind11::module_& m) {
  m.attr("LINEAR_BLOCK_GEMV_MAX_M") = int(TC_LINEAR_BLOCK_GEMV_MAX_M);
  m.attr("LINEAR_BLOCK_INT8") = int(TC_LINEAR_BLOCK_INT8);
  m.def("linear_block", &linear_block, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("d"),
        py::arg("x_row_stride"), py::arg("U"), py::arg("V"), py::arg("factor_dtype"), py::arg("r"),
        py::arg("u_scale"), py::arg("v_scale"), py::arg("b"), py::arg("b_dtype"), py::arg("mu"), py::arg("mu_dtype"),
        py::arg("y"), py::arg("y_row_stride"), py::arg("device"), py::arg("stream"),
        "Enqueues y = x + b + ((x - mu) U) V for M rows on `stream` (a cudaStream_t as an int) of `device` (see "
        "tcompress/linear_block_cuda.h); pointers as integers, 0 for none. Releases the GIL.");
}

}  // namespace tcompress_bindings
