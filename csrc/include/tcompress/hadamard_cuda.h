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

/* Number of usable CUDA devices; 0 when there is no device or no driver (never an error). */
int tc_cuda_device_count(void);
/* Why there is no device, or "ok": the CUDA runtime's own words. Valid until the next call. */
const char* tc_cuda_status_string(void);
/* The CUDA runtime version this module was built against, e.g. 13000. */
int tc_cuda_runtime_version(void);
/* The message of the last failed CUDA call in this thread (after a TC_ERR_CUDA status). */
const char* tc_cuda_last_error(void);

/* `hk` is a pointer, on `device`, to the k x k fp32 matrix (NULL when k == 1). The call runs on `device` and
 * restores the caller's current device before returning. Largest n: what fits one row in the device's shared
 * memory (tc_cuda_hadamard_max_n). */
int tc_cuda_hadamard(const void* x, void* out, int64_t rows, int64_t n, int64_t x_row_stride, int64_t out_row_stride,
                     int dtype, const float* hk, int64_t k, float scale, int device, void* stream);
int64_t tc_cuda_hadamard_max_n(int device);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_HADAMARD_CUDA_H */
