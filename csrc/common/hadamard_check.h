// Argument checks shared by the CPU and CUDA Hadamard entry points (compiled by the host compiler into both).
#pragma once

#include <stdint.h>

namespace tcompress {

// Returns a tc_status: TC_OK when the arguments describe a valid call of tc_hadamard_cpu / tc_hadamard_cuda
// (see tcompress/hadamard.h). `hk_readable`: hk is host memory whose entries can be checked to be +-1.
int check_hadamard_args(const void* x, const void* out, int64_t rows, int64_t n, int64_t x_row_stride,
                        int64_t out_row_stride, int dtype, const float* hk, int64_t k, float scale, bool hk_readable);

}  // namespace tcompress
