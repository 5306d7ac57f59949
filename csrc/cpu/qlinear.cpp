// tc_qlinear_cpu: re-checks every argument (the Python layer checked them too, but native code never trusts its
// caller), then runs the qlinear kernel of the ISA variant in use (active_kernels()).
#include <omp.h>

#include "../common/qlinear_check.h"
#include "kernel_table.h"
#include "tcompress/qlinear.h"

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
  const tcompress::KernelTable& k = tcompress::active_kernels();
  if (k.qlinear_gemm_bf16 != nullptr && a.x_dtype == TC_BFLOAT16 && a.M > TC_QLINEAR_GEMV_MAX_M) {
    const int st = k.qlinear_gemm_bf16(a);
    if (st != tcompress::kQLinearNotHandled) return st;
  }
  return k.qlinear(a);
}
