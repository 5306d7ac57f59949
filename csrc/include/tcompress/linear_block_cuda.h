/* CUDA launcher of the fused linear block; arguments exactly as tc_linear_block_cpu (tcompress/linear_block.h),
 * all pointers on `device`, plus the raw cudaStream_t. Every pointer must be aligned to its element size
 * (TC_ERR_BAD_ARGUMENT otherwise; torch's tensors always are). The work is only enqueued: the fp32 intermediate
 * (M x r) is allocated and freed in stream order (cudaMallocAsync / cudaFreeAsync on `stream`; TC_ERR_OUT_OF_MEMORY
 * when that allocation fails). Argument checks come before any CUDA call, so they answer without a device.
 * Returns a tc_status. */
#ifndef TCOMPRESS_LINEAR_BLOCK_CUDA_H
#define TCOMPRESS_LINEAR_BLOCK_CUDA_H

#include <stdint.h>

#include "tcompress/linear_block.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_linear_block_cuda(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride, const void* U,
                         const void* V, int factor_dtype, int64_t r, const float* u_scale, const float* v_scale,
                         const void* b, int b_dtype, const void* mu, int mu_dtype, void* y, int64_t y_row_stride,
                         int device, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_LINEAR_BLOCK_CUDA_H */
