// The arguments of the qlinear_a8 kernels (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// Arguments of the qlinear_a8 entry points after validation (see tcompress/qlinear_a8.h).
struct QLinearA8Args {
  // Activations: either float x (quantized on the fly) or ready int8 codes (the accumulator entry point).
  const void* x;  // null when `codes` is given
  int x_dtype;
  int64_t x_row_stride;  // elements
  const int8_t* codes;   // (M, K) contiguous, or null
  int act_bits;
  bool act_per_group;    // one activation scale per (row, weight group) instead of per row
  int64_t M, K, N;
  const uint8_t* qweight;
  int bits;
  const void* scales;  // null for the accumulator entry point
  int scale_dtype;
  const uint8_t* zeros;  // null: symmetric
  int64_t group_size;    // resolved: K for per-channel
  int64_t groups;        // K / group_size
  const void* bias;      // null: none
  int bias_dtype;
  void* y;               // float output (M rows, y_row_stride apart), or null
  int64_t y_row_stride;  // elements
  int32_t* acc;          // (M, N, groups) int32 accumulator output, or null
  int num_threads;       // resolved (>= 1)
};

}  // namespace tcompress
