// The qlinear_a8 family's per-ISA kernel tables. Each qlinear_a8_<isa>.cpp (compiled with its own flags) defines
// `tcompress::<isa>::qlinear_a8_kernels`; qlinear_a8.cpp picks one with tc_isa_get() and the CPU's VNNI bit. Only
// plain data crosses this boundary (see kernel_table.h for why).
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

struct QLinearA8Kernels {
  const char* name;
  int (*qlinear_a8)(const QLinearA8Args& args);  // y or acc, per the args
  int (*quantize_activations)(const QLinearA8Args& args, int8_t* codes, float* act_scales);
};

namespace scalar {
extern const QLinearA8Kernels qlinear_a8_kernels;
}
namespace avx2 {
extern const QLinearA8Kernels qlinear_a8_kernels;
}
// vpdpbusd: call only when the CPU reports AVX512_VNNI (and the AVX-512 F/BW/VL the variant needs).
namespace avx512vnni {
extern const QLinearA8Kernels qlinear_a8_kernels;
}

}  // namespace tcompress
