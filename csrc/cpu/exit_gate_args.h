// The arguments of the exit_gate kernels (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// tc_exit_gate_cpu after validation: rows >= 1, vocab >= 1, row_stride >= vocab, criterion and threshold valid.
struct ExitGateArgs {
  const void* logits;
  int dtype;
  int64_t rows;
  int64_t vocab;
  int64_t row_stride;  // elements
  int criterion;       // tc_exit_criterion
  float threshold;
  float* confidence;  // rows
  uint8_t* exit_mask;  // rows
  int64_t* argmax;     // rows, or null
  int64_t* bad_row;    // first row without a softmax (set only on TC_ERR_NOT_FINITE)
  int* bad_kind;       // tc_exit_bad_row of that row
  int num_threads;
};

// tc_exit_gate_head_cpu after validation: vocab >= 1, d >= 1, weight_row_stride >= d.
struct ExitGateHeadArgs {
  const float* hidden;  // d
  const void* weight;   // vocab x d
  int dtype;
  int64_t vocab;
  int64_t d;
  int64_t weight_row_stride;  // elements
  const float* bias;          // vocab, or null
  int criterion;
  float threshold;
  float* confidence;  // 1
  uint8_t* exit_mask;  // 1
  int64_t* argmax;     // 1
  int* bad_kind;
  int num_threads;
};

}  // namespace tcompress
