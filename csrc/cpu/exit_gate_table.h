// The per-ISA kernel tables of the exit_gate family. Each exit_gate_<isa>.cpp (compiled with its own flags)
// defines `tcompress::<isa>::exit_gate_kernels`; exit_gate.cpp checks the arguments and calls the table of the
// variant that tc_isa_get() names. As with kernel_table.h, only plain data crosses this boundary.
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

struct ExitGateKernels {
  int (*exit_gate)(const ExitGateArgs& args);
  int (*exit_gate_head)(const ExitGateHeadArgs& args);
};

namespace scalar {
extern const ExitGateKernels exit_gate_kernels;
}
namespace avx2 {
extern const ExitGateKernels exit_gate_kernels;
}
namespace avx512 {
extern const ExitGateKernels exit_gate_kernels;
}

}  // namespace tcompress
