// Device discovery for tcompress._cuda. With the static runtime, cudaGetDeviceCount answers (with an error
// code, not a crash) on a machine with no GPU or no driver; we turn that into "0 devices" plus the reason.
#include <cuda_runtime.h>

#include <string>

#include "cuda_error.h"
#include "tcompress/cuda_device.h"
#include "tcompress/status.h"

namespace {
thread_local std::string g_status = "not queried";
thread_local std::string g_last_error;
}  // namespace

namespace tcompress {
int cuda_fail(cudaError_t err, const char* what) {
  g_last_error = std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  cudaGetLastError();  // clear the sticky-free error so the next call starts clean
  return TC_ERR_CUDA;
}
}  // namespace tcompress

extern "C" int tc_cuda_device_count(void) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    g_status = std::string("no CUDA device (") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + ")";
    cudaGetLastError();
    return 0;
  }
  g_status = count > 0 ? "ok" : "no CUDA device";
  return count;
}

extern "C" const char* tc_cuda_status_string(void) { return g_status.c_str(); }

extern "C" int tc_cuda_runtime_version(void) { return CUDART_VERSION; }

extern "C" const char* tc_cuda_last_error(void) { return g_last_error.c_str(); }
