/* CUDA entry points of the quant family: the contract of tcompress/quant.h with device pointers, a device index
 * and a CUDA stream (cudaStream_t passed as void*; NULL is the legacy default stream). Each call runs on
 * `device`, restores the caller's current device before returning, and only enqueues work: nothing here
 * synchronizes.
 *
 * Sizes, strides, dtypes, pointers and overlaps are checked on the host, as on the CPU. What only the data can
 * tell (NaN/Inf in w, a scale that overflows its dtype, a code above 15 handed to pack) is found by the kernel,
 * which cannot return it without a synchronization: it stores the tc_status (TC_ERR_NOT_FINITE or
 * TC_ERR_BAD_ARGUMENT) into `device_status`, a device int32 the caller zeroed beforehand and reads back when it
 * wants to know (NULL: not reported). The outputs then hold unspecified values.
 *
 * Returns a tc_status for what is known on the host: the checks of tcompress/quant.h, TC_ERR_NO_DEVICE, or
 * TC_ERR_CUDA (tc_cuda_last_error() says which call failed). */
#ifndef TCOMPRESS_QUANT_CUDA_H
#define TCOMPRESS_QUANT_CUDA_H

#include <stdint.h>

#include "tcompress/quant.h"
#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_quantize_cuda(const void* w, int w_dtype, int64_t out_features, int64_t in_features, int64_t w_row_stride,
                     int bits, int64_t group_size, int symmetric, uint8_t* codes, void* scales, int scale_dtype,
                     uint8_t* zeros, int32_t* device_status, int device, void* stream);

int tc_pack_int4_cuda(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n, int64_t codes_row_stride,
                      int64_t packed_row_stride, int32_t* device_status, int device, void* stream);

int tc_unpack_int4_cuda(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n, int64_t packed_row_stride,
                        int64_t codes_row_stride, int device, void* stream);

int tc_dequantize_cuda(const uint8_t* codes, int codes_format, int64_t out_features, int64_t in_features,
                       int64_t codes_row_stride, const void* scales, int scale_dtype, const uint8_t* zeros, int bits,
                       int64_t group_size, void* out, int out_dtype, int64_t out_row_stride, int device,
                       void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QUANT_CUDA_H */
