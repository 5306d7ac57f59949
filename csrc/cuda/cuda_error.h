// Error bookkeeping shared by the .cu files of tcompress._cuda.
#pragma once

#include <cuda_runtime.h>

namespace tcompress {
// Records "what: name: message" for tc_cuda_last_error() and returns TC_ERR_CUDA.
int cuda_fail(cudaError_t err, const char* what);
}  // namespace tcompress
