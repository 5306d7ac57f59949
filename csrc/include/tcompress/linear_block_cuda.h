/* CUDA launcher of the fused linear block; arguments exactly as tc_linear_block_cpu (tcompress/linear_block.h),
 * all pointers on `device`, plus the raw cudaStream_t. Returns a tc_status. */
#ifndef TCOMPRESS_LINEAR_BLOCK_CUDA_H
#define TCOMPRESS_LINEAR_BLOCK_CUDA_H

#include <stdint.h>

#include "tcompress/linear_block.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_cuda_linear_block(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride, const void* U,
                         const void* V, int factor_dtype, int64_t r, const float* u_scale, const float* v_scale,
                         const void* b, int b_dtype, const void* mu, int mu_dtype, void* y, int64_t y_row_stride,
                         int device, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_LINEAR_BLOCK_CUDA_H */
