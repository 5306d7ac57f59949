/* CUDA entry points. Same contract as tcompress/hadamard.h, with device pointers and a CUDA stream
 * (cudaStream_t passed as void*; NULL is the legacy default stream). Compiled by nvcc into a static library
 * that the pybind11 module (compiled by the host compiler) links: nothing here needs CUDA headers. */
#ifndef TCOMPRESS_HADAMARD_CUDA_H
#define TCOMPRESS_HADAMARD_CUDA_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* `hk` is a pointer, on `device`, to the k x k fp32 matrix (NULL when k == 1). The call runs on `device` and
 * restores the caller's current device before returning. Largest n: what fits one row in the device's shared
 * memory (tc_hadamard_max_n_cuda). */
int tc_hadamard_cuda(const void* x, void* out, int64_t rows, int64_t n, int64_t x_row_stride, int64_t out_row_stride,
                     int dtype, const float* hk, int64_t k, float scale, int device, void* stream);
int64_t tc_hadamard_max_n_cuda(int device);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_HADAMARD_CUDA_H */
