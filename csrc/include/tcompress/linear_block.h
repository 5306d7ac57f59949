/* Fused linear block (the substitution of a whole decoder block by an affine map):
 *
 *   y[m, j] = x[m, j] + b[j] + sum_i t[m, i] * V[i, j] * v_scale[j]
 *   t[m, i] = sum_k (x[m, k] - mu[k]) * U[k, i] * u_scale[i]
 *
 * x: M rows of d elements (fp32/fp16/bf16, `x_dtype`), row m at x + m * x_row_stride elements.
 * U: (d, r) and V: (r, d), row-major and contiguous (the documented public layout, which is also the fastest one
 *   for these kernels: both products broadcast an activation and stream contiguous factor rows), element type
 *   `factor_dtype`: TC_FLOAT32, TC_FLOAT16, TC_BFLOAT16 or TC_LINEAR_BLOCK_INT8 (signed codes).
 * u_scale (r,), v_scale (d,): fp32 per-column scales, required for int8 factors and NULL otherwise.
 * b, mu: d elements each of `b_dtype` / `mu_dtype` (fp32/fp16/bf16).
 * y: M rows of d elements in x_dtype, row m at y + m * y_row_stride; it must not overlap any input.
 *
 * Arithmetic and accumulation are fp32; the intermediate t (M x r) never leaves the kernel. num_threads <= 0 uses
 * the OpenMP default. Returns a tc_status. */
#ifndef TCOMPRESS_LINEAR_BLOCK_H
#define TCOMPRESS_LINEAR_BLOCK_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Factor element type for int8 codes with fp32 per-column scales (the float codes are those of tc_dtype). */
#define TC_LINEAR_BLOCK_INT8 3

/* Rows up to which the CPU kernel streams U and V once for all rows (GEMV path, widening factors in registers);
 * more rows widen the factors into fp32 panels once per call and run two register-blocked GEMMs per row block
 * with the block's intermediate kept in a per-thread buffer. */
#define TC_LINEAR_BLOCK_GEMV_MAX_M 8

int tc_linear_block_cpu(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride, const void* U,
                        const void* V, int factor_dtype, int64_t r, const float* u_scale, const float* v_scale,
                        const void* b, int b_dtype, const void* mu, int mu_dtype, void* y, int64_t y_row_stride,
                        int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_LINEAR_BLOCK_H */
