/* Matrix multiplication with packed int4/int8 weights (the format of python/tcompress/ops/quantize.py):
 *
 *   y[m, n] = sum_k x[m, k] * ((u[n, k] - z[n, g(k)]) * s[n, g(k)]) + bias[n]        g(k) = k / group_size
 *
 * x: M rows of K elements (fp32/fp16/bf16, `x_dtype`), row m at x + m * x_row_stride elements.
 * qweight: N rows of unsigned codes, contiguous. bits == 8: (N, K) bytes. bits == 4: (N, K / 2) bytes, byte j of a
 *   row holding column 2j in its low nibble and column 2j + 1 in its high nibble (K must be even).
 * scales: (N, G) contiguous, `scale_dtype` (fp32/fp16/bf16), G = K / group_size, or 1 when group_size == 0
 *   (per output channel). group_size must divide K.
 * zeros: (N, G) uint8 zero points, or NULL for symmetric codes (implicit zero 2^(bits-1)).
 * bias: N elements of `bias_dtype`, or NULL.
 * y: M rows of N elements in x_dtype, row m at y + m * y_row_stride elements; it must not overlap any input.
 *
 * Arithmetic and accumulation are fp32. num_threads <= 0 uses the OpenMP default. Returns a tc_status. */
#ifndef TCOMPRESS_QLINEAR_H
#define TCOMPRESS_QLINEAR_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CPU, on the variant chosen by tc_isa_set() / at load. */
int tc_qlinear_cpu(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* qweight,
                   int64_t N, int bits, const void* scales, int scale_dtype, const uint8_t* zeros,
                   int64_t group_size, const void* bias, int bias_dtype, void* y, int64_t y_row_stride,
                   int num_threads);

/* Rows of x up to which the CPU kernel streams the weights once for all rows (the GEMV path); larger M
 * dequantizes tiles of W and runs a register-blocked GEMM. */
#define TC_QLINEAR_GEMV_MAX_M 8

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QLINEAR_H */
