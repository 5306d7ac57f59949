// The arguments of the linear_block kernels (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// Arguments of tc_linear_block_cpu after validation (see tcompress/linear_block.h).
struct LinearBlockArgs {
  const void* x;
  int x_dtype;
  int64_t M, d, r;
  int64_t x_row_stride;  // elements; d when M == 1
  const void* U;         // (d, r) row-major
  const void* V;         // (r, d) row-major
  int factor_dtype;      // tc_dtype or TC_LINEAR_BLOCK_INT8
  const float* u_scale;  // (r,), int8 only
  const float* v_scale;  // (d,), int8 only
  const void* b;
  int b_dtype;
  const void* mu;
  int mu_dtype;
  void* y;
  int64_t y_row_stride;  // elements; d when M == 1
  int num_threads;       // resolved (>= 1)
};

}  // namespace tcompress
