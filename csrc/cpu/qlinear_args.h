// The arguments of the qlinear kernels (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// Arguments of tc_qlinear_cpu after validation (see tcompress/qlinear.h).
struct QLinearArgs {
  const void* x;
  int x_dtype;
  int64_t M, K, N;
  int64_t x_row_stride;  // elements; K when M == 1
  const uint8_t* qweight;
  int bits;
  const void* scales;
  int scale_dtype;
  const uint8_t* zeros;  // null: symmetric
  int64_t group_size;    // resolved: K for per-channel
  int64_t groups;        // K / group_size
  const void* bias;      // null: none
  int bias_dtype;
  void* y;
  int64_t y_row_stride;  // elements; N when M == 1
  int num_threads;       // resolved (>= 1)
};

// GEMV work (N * K weights) below which one thread runs it all: at 576x192 (110K weights, ~4.5 us) the OpenMP fork
// and join cost more than the second thread saved (2 threads 5.7-6.2 us); at 576x576 (332K) 2 threads win, 9 vs 11 us.
// The GEMV (qlinear_gemv.h) and the decode step's groups of projections (decode_step.cpp) both split at it.
constexpr int64_t kQLinearParallelMinWeights = int64_t(1) << 18;

// What the bf16-x GEMM (KernelTable::qlinear_gemm_bf16) returns for arguments it does not take; then the plain
// qlinear kernel runs.
constexpr int kQLinearNotHandled = -1;

}  // namespace tcompress
