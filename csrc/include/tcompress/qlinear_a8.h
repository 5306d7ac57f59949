/* Integer matmul with dynamically quantized activations (W8A8, W4A8, W8A4, W4A4), CPU. Per token:
 *
 *   a[m, k]   = clamp(round(x[m, k] / sx[m]), -q, q)       sx[m] = max_k |x[m, k]| / q (1 for a row of zeros),
 *                                                          q = 2^(act_bits - 1) - 1, round half to even
 *   acc[m,n,g] = sum_{k in g} (u[n, k] - z[n, g]) * a[m, k]                       (exact, int32)
 *   c[m, n]   = sum over g in increasing order of float(acc[m, n, g]) * s[n, g]   (fp32, one group at a time)
 *   y[m, n]   = c[m, n] * sx[m] + bias[n]
 *
 * Per group (act_per_group != 0; llama.cpp's Q8_0 activations when the weight groups hold 32 columns): one
 * activation scale per weight group, sx[m, g] = max_{k in g} |x[m, k]| / q, a[m, k] = round(x[m, k] / sx[m, g]),
 *
 *   c[m, n]   = sum over g in increasing order of float(acc[m, n, g]) * (s[n, g] * sx[m, g]),  y = c + bias[n].
 *
 * The weight format is that of tc_qlinear_cpu (tcompress/qlinear.h): unsigned codes u, int4 packed two per byte
 * (even column in the low nibble), zero points z (NULL: symmetric, z = 2^(bits-1)), scales s per group.
 * group_size 0 means one group per output channel. The int32 accumulators are exact as long as a group holds at
 * most TC_QLINEAR_A8_MAX_GROUP columns (255 * 127 * 65536 < 2^31); larger groups are TC_ERR_BAD_SIZE.
 * x must be finite (TC_ERR_NOT_FINITE otherwise). Returns a tc_status; num_threads <= 0: the OpenMP default. */
#ifndef TCOMPRESS_QLINEAR_A8_H
#define TCOMPRESS_QLINEAR_A8_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_QLINEAR_A8_MAX_GROUP 65536

/* The fp32 sums follow the formula's order except at M <= 4 on the row kernel, which adds 8-column partial sums
 * per group lane by lane and the lanes at the end: equal up to fp32 summation order; the integers are exact on
 * every path.
 *
 * y = the formula above. Argument layout as tc_qlinear_cpu, plus act_bits (8 or 4) and act_per_group (0: one
 * activation scale per token, 1: one per token and weight group). */
int tc_qlinear_a8_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* qweight,
                      int64_t N, int bits, const void* scales, int scale_dtype, const uint8_t* zeros,
                      int64_t group_size, int act_bits, int act_per_group, const void* bias, int bias_dtype, void* y,
                      int64_t y_row_stride, int num_threads);

/* The activation quantization step alone: codes (M, K) int8 and sx (M) fp32, both contiguous. */
int tc_quantize_activations_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, int act_bits,
                                int8_t* codes, float* act_scales, int num_threads);

/* The integer step alone, for exact tests: acc (M, N, G) int32 contiguous from given codes (M, K) int8
 * (contiguous, each in [-127, 127]) through the same integer kernels as tc_qlinear_a8_cpu. */
int tc_qlinear_a8_accumulators_cpu(const int8_t* codes, int64_t M, int64_t K, const uint8_t* qweight, int64_t N,
                                   int bits, const uint8_t* zeros, int64_t group_size, int32_t* acc, int num_threads);

/* The kernel the variant in use runs: "scalar", "avx2" (vpmaddubsw) or "avx512_vnni" (vpdpbusd). */
const char* tc_qlinear_a8_kernel_name(void);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QLINEAR_A8_H */
