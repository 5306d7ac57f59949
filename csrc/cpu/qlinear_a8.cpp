// tc_qlinear_a8_cpu and friends: re-check every argument (the Python layer checked them too, but native code never
// trusts its caller), then run the qlinear_a8 kernels of the variant in use (active_kernels(): under avx512 the
// vpdpbusd kernels when the CPU reports AVX512_VNNI and the AVX2 ones otherwise; see dispatch.cpp).
#include <omp.h>

#include "../common/qlinear_check.h"
#include "kernel_table.h"
#include "tcompress/qlinear_a8.h"

namespace tcompress {
namespace {

int resolved_threads(int num_threads) { return num_threads > 0 ? num_threads : omp_get_max_threads(); }

bool group_too_large(int64_t K, int64_t group_size) {
  return (group_size == 0 ? K : group_size) > TC_QLINEAR_A8_MAX_GROUP;
}

}  // namespace
}  // namespace tcompress

extern "C" int tc_qlinear_a8_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                                 const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                                 const uint8_t* zeros, int64_t group_size, int act_bits, int act_per_group,
                                 const void* bias,
                                 int bias_dtype, void* y, int64_t y_row_stride, int num_threads) {
  const int status = tcompress::check_qlinear_args(x, x_dtype, M, K, x_row_stride, qweight, N, bits, scales,
                                                   scale_dtype, zeros, group_size, bias, bias_dtype, y, y_row_stride);
  if (status != TC_OK) return status;
  if ((act_bits != 4 && act_bits != 8) || (act_per_group != 0 && act_per_group != 1)) return TC_ERR_BAD_ARGUMENT;
  if (tcompress::group_too_large(K, group_size)) return TC_ERR_BAD_SIZE;
  if (M == 0) return TC_OK;
  tcompress::QLinearA8Args a{};
  a.x = x;
  a.x_dtype = x_dtype;
  a.x_row_stride = M > 1 ? x_row_stride : K;
  a.act_bits = act_bits;
  a.act_per_group = act_per_group != 0;
  a.M = M;
  a.K = K;
  a.N = N;
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
  a.num_threads = tcompress::resolved_threads(num_threads);
  return tcompress::active_kernels().qlinear_a8(a);
}

extern "C" int tc_quantize_activations_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                                           int act_bits, int8_t* codes, float* act_scales, int num_threads) {
  if (tc_dtype_size(x_dtype) == 0) return TC_ERR_BAD_DTYPE;
  if (act_bits != 4 && act_bits != 8) return TC_ERR_BAD_ARGUMENT;
  const int64_t kMaxDim = int64_t(1) << 31;
  if (M < 0 || M >= kMaxDim || K < 1 || K >= kMaxDim) return TC_ERR_BAD_SIZE;
  if (M == 0) return TC_OK;
  if (x == nullptr || codes == nullptr || act_scales == nullptr) return TC_ERR_NULL_POINTER;
  if (M > 1 && (x_row_stride < K || x_row_stride >= kMaxDim * 4)) return TC_ERR_BAD_STRIDE;
  tcompress::QLinearA8Args a{};
  a.x = x;
  a.x_dtype = x_dtype;
  a.x_row_stride = M > 1 ? x_row_stride : K;
  a.act_bits = act_bits;
  a.M = M;
  a.K = K;
  a.num_threads = tcompress::resolved_threads(num_threads);
  return tcompress::active_kernels().quantize_activations(a, codes, act_scales);
}

extern "C" int tc_qlinear_a8_accumulators_cpu(const int8_t* codes, int64_t M, int64_t K, const uint8_t* qweight,
                                              int64_t N, int bits, const uint8_t* zeros, int64_t group_size,
                                              int32_t* acc, int num_threads) {
  if (bits != 4 && bits != 8) return TC_ERR_BAD_ARGUMENT;
  const int64_t kMaxDim = int64_t(1) << 31;
  if (M < 0 || M >= kMaxDim || K < 1 || K >= kMaxDim || N < 1 || N >= kMaxDim) return TC_ERR_BAD_SIZE;
  if (bits == 4 && K % 2 != 0) return TC_ERR_BAD_SIZE;
  if (group_size < 0 || group_size > K || (group_size > 0 && K % group_size != 0)) return TC_ERR_BAD_SIZE;
  if (tcompress::group_too_large(K, group_size)) return TC_ERR_BAD_SIZE;
  if (qweight == nullptr) return TC_ERR_NULL_POINTER;
  if (M == 0) return TC_OK;
  if (codes == nullptr || acc == nullptr) return TC_ERR_NULL_POINTER;
  tcompress::QLinearA8Args a{};
  a.codes = codes;
  a.M = M;
  a.K = K;
  a.N = N;
  a.qweight = qweight;
  a.bits = bits;
  a.zeros = zeros;
  a.group_size = group_size == 0 ? K : group_size;
  a.groups = K / a.group_size;
  a.acc = acc;
  a.num_threads = tcompress::resolved_threads(num_threads);
  return tcompress::active_kernels().qlinear_a8(a);
}

extern "C" const char* tc_qlinear_a8_kernel_name(void) { return tcompress::active_kernels().qlinear_a8_name; }
