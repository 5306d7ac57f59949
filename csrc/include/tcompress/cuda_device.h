/* The CUDA module's device discovery and error reporting (the counterpart of tcompress/isa.h on the CPU side).
 * Compiled by nvcc into a static library that the pybind11 module (compiled by the host compiler) links: nothing
 * here needs CUDA headers. */
#ifndef TCOMPRESS_CUDA_DEVICE_H
#define TCOMPRESS_CUDA_DEVICE_H

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

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_CUDA_DEVICE_H */
