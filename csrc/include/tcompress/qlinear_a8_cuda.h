/* CUDA qlinear_a8: the contract of tc_qlinear_a8_cpu (tcompress/qlinear_a8.h) with device pointers, run on
 * `device` and enqueued on `stream` (a cudaStream_t; NULL: the legacy default stream). The caller's current device
 * is restored before returning. Scratch memory (the int8 codes and per-token scales) comes from
 * cudaMallocAsync on the stream. Returns a tc_status (TC_ERR_CUDA: see tc_cuda_last_error()). Inputs are not
 * checked for NaN/Inf on the device. */
#ifndef TCOMPRESS_QLINEAR_A8_CUDA_H
#define TCOMPRESS_QLINEAR_A8_CUDA_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_qlinear_a8_cuda(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                       const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                       const uint8_t* zeros, int64_t group_size, int act_bits, const void* bias, int bias_dtype,
                       void* y, int64_t y_row_stride, int device, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QLINEAR_A8_CUDA_H */
