// tc_qlinear_cpu: re-checks every argument (the Python layer checked them too, but native code never trusts its
// caller), then runs the qlinear kernels of the ISA variant in use (tc_isa_get()).
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../common/qlinear_check.h"
#include "qlinear_table.h"
#include "tcompress/isa.h"
#include "tcompress/qlinear.h"

namespace tcompress {
namespace {

const QLinearKernels* qlinear_table_for(int isa) {
  switch (isa) {
#ifdef TC_HAVE_X86_VARIANTS
    case TC_ISA_AVX512: return &avx512::qlinear_kernels;
    case TC_ISA_AVX2: return &avx2::qlinear_kernels;
#endif
    default: return &scalar::qlinear_kernels;
  }
}

#ifdef TC_HAVE_X86_VARIANTS
// bf16 x with more than TC_QLINEAR_GEMV_MAX_M rows under the avx512 variant, on a CPU with AVX512_BF16: the
// vdpbf16ps GEMM (same numerics as the fp32 GEMM up to summation order; see qlinear_avx512_bf16.cpp).
// TC_QLINEAR_BF16_GEMM=0 in the environment turns it off (A/B timing).
bool use_bf16_gemm(const QLinearArgs& a, int isa) {
  static const bool enabled = [] {
    tc_cpu_features f;
    tc_cpu_features_get(&f);
    const char* env = getenv("TC_QLINEAR_BF16_GEMM");
    return f.avx512_bf16 != 0 && !(env != nullptr && strcmp(env, "0") == 0);
  }();
  return enabled && isa == TC_ISA_AVX512 && a.x_dtype == TC_BFLOAT16 && a.M > TC_QLINEAR_GEMV_MAX_M;
}
#endif

}  // namespace
}  // namespace tcompress

extern "C" int tc_qlinear_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                              const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                              const uint8_t* zeros, int64_t group_size, const void* bias, int bias_dtype, void* y,
                              int64_t y_row_stride, int num_threads) {
  const int status = tcompress::check_qlinear_args(x, x_dtype, M, K, x_row_stride, qweight, N, bits, scales,
                                                   scale_dtype, zeros, group_size, bias, bias_dtype, y, y_row_stride);
  if (status != TC_OK || M == 0) return status;
  tcompress::QLinearArgs a;
  a.x = x;
  a.x_dtype = x_dtype;
  a.M = M;
  a.K = K;
  a.N = N;
  a.x_row_stride = M > 1 ? x_row_stride : K;
  a.qweight = qweight;
  a.bits = bits;
  a.scales = scales;
  a.scale_dtype = scale_dtype;
  a.zeros = zeros;
  a.group_size = group_size == 0 ? K : group_size;
  a.groups = K / a.group_size;
  a.bias = bias;
  a.bias_dtype = bias_dtype;
  a.y = y;
  a.y_row_stride = M > 1 ? y_row_stride : N;
  a.num_threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  const int isa = tc_isa_get();
#ifdef TC_HAVE_X86_VARIANTS
  if (tcompress::use_bf16_gemm(a, isa)) {
    const int st = tcompress::avx512bf16::qlinear_gemm_bf16(a);
    if (st != tcompress::kQLinearNotHandled) return st;
  }
#endif
  return tcompress::qlinear_table_for(isa)->qlinear(a);
}
