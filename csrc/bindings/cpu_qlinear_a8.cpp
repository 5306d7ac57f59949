// tcompress._C bindings of the qlinear_a8 kernels (see tcompress/qlinear_a8.h).
#include <cstdint>
#include <sstream>

#include "register.h"
#include "status_error.h"
#include "tcompress/qlinear_a8.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

void qlinear_a8(uintptr_t x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t qweight, int64_t N,
                int bits, uintptr_t scales, int scale_dtype, uintptr_t zeros, int64_t group_size, int act_bits,
                int act_per_group, uintptr_t bias, int bias_dtype, uintptr_t y, int64_t y_row_stride,
                int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_qlinear_a8_cpu(reinterpret_cast<const void*>(x), x_dtype, M, K, x_row_stride,
                               reinterpret_cast<const uint8_t*>(qweight), N, bits,
                               reinterpret_cast<const void*>(scales), scale_dtype,
                               reinterpret_cast<const uint8_t*>(zeros), group_size, act_bits, act_per_group,
                               reinterpret_cast<const void*>(bias), bias_dtype, reinterpret_cast<void*>(y),
                               y_row_stride, num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.qlinear_a8(M=" << M << ", K=" << K << ", N=" << N << ", bits=" << bits
        << ", group_size=" << group_size << ", act_bits=" << act_bits << ", act_per_group=" << act_per_group
        << ", x_row_stride=" << x_row_stride
        << ", y_row_stride=" << y_row_stride << ", x_dtype=" << x_dtype << ", scale_dtype=" << scale_dtype << ")";
    raise_status(status, ctx.str());
  }
}

void quantize_activations(uintptr_t x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, int act_bits,
                          uintptr_t codes, uintptr_t act_scales, int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_quantize_activations_cpu(reinterpret_cast<const void*>(x), x_dtype, M, K, x_row_stride, act_bits,
                                         reinterpret_cast<int8_t*>(codes), reinterpret_cast<float*>(act_scales),
                                         num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.quantize_activations(M=" << M << ", K=" << K << ", act_bits=" << act_bits
        << ", x_row_stride=" << x_row_stride << ", x_dtype=" << x_dtype << ")";
    raise_status(status, ctx.str());
  }
}

void qlinear_a8_accumulators(uintptr_t codes, int64_t M, int64_t K, uintptr_t qweight, int64_t N, int bits,
                             uintptr_t zeros, int64_t group_size, uintptr_t acc, int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_qlinear_a8_accumulators_cpu(reinterpret_cast<const int8_t*>(codes), M, K,
                                            reinterpret_cast<const uint8_t*>(qweight), N, bits,
                                            reinterpret_cast<const uint8_t*>(zeros), group_size,
                                            reinterpret_cast<int32_t*>(acc), num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.qlinear_a8_accumulators(M=" << M << ", K=" << K << ", N=" << N << ", bits=" << bits
        << ", group_size=" << group_size << ")";
    raise_status(status, ctx.str());
  }
}

}  // namespace

void bind_cpu_qlinear_a8(pybind11::module_& m) {
  m.attr("QLINEAR_A8_MAX_GROUP") = int(TC_QLINEAR_A8_MAX_GROUP);
  m.def("qlinear_a8", &qlinear_a8, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("K"),
        py::arg("x_row_stride"), py::arg("qweight"), py::arg("N"), py::arg("bits"), py::arg("scales"),
        py::arg("scale_dtype"), py::arg("zeros"), py::arg("group_size"), py::arg("act_bits"),
        py::arg("act_per_group"), py::arg("bias"), py::arg("bias_dtype"), py::arg("y"), py::arg("y_row_stride"),
        py::arg("num_threads"),
        "y[m] = Q(x[m]) @ (u - z)^T, scaled per group and per token (or per token and group), + bias (see tcompress/qlinear_a8.h); "
        "pointers as integers, 0 for none. Releases the GIL.");
  m.def("quantize_activations", &quantize_activations, py::arg("x"), py::arg("x_dtype"), py::arg("M"), py::arg("K"),
        py::arg("x_row_stride"), py::arg("act_bits"), py::arg("codes"), py::arg("act_scales"),
        py::arg("num_threads"), "Per-token int8 codes (M, K) and fp32 scales (M) of x. Releases the GIL.");
  m.def("qlinear_a8_accumulators", &qlinear_a8_accumulators, py::arg("codes"), py::arg("M"), py::arg("K"),
        py::arg("qweight"), py::arg("N"), py::arg("bits"), py::arg("zeros"), py::arg("group_size"), py::arg("acc"),
        py::arg("num_threads"),
        "The exact int32 group accumulators (M, N, G) of the qlinear_a8 integer kernel for int8 codes (M, K). "
        "Releases the GIL.");
  m.def("qlinear_a8_kernel_name", &tc_qlinear_a8_kernel_name,
        "The qlinear_a8 kernel the ISA variant in use runs: scalar, avx2 or avx512_vnni.");
}

}  // namespace tcompress_bindings
