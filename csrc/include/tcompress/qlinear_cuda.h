/* CUDA qlinear: same contract as tc_qlinear_cpu (tcompress/qlinear.h), with every pointer in device memory of
 * `device`, enqueued on `stream` (a cudaStream_t; NULL = the legacy default stream). The caller's current device
 * is restored before returning. Returns a tc_status (TC_ERR_CUDA: see tc_cuda_last_error()). */
#ifndef TCOMPRESS_QLINEAR_CUDA_H
#define TCOMPRESS_QLINEAR_CUDA_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_qlinear_cuda(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride, const uint8_t* qweight,
                    int64_t N, int bits, const void* scales, int scale_dtype, const uint8_t* zeros,
                    int64_t group_size, const void* bias, int bias_dtype, void* y, int64_t y_row_stride, int device,
                    void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QLINEAR_CUDA_H */
