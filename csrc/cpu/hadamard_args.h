// The arguments of the Hadamard kernel (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// Arguments of tc_hadamard_cpu after validation (see tcompress/hadamard.h): n == k * p with p a power of two.
struct HadamardArgs {
  const void* x;
  void* out;
  int64_t rows;
  int64_t n;
  int64_t k;
  int64_t p;
  int64_t x_row_stride;
  int64_t out_row_stride;
  int dtype;
  const float* hk;  // k x k, row-major, entries +-1 (null when k == 1)
  float scale;
  int num_threads;
};

}  // namespace tcompress
