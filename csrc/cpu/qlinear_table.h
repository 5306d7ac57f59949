// The qlinear family's per-ISA kernel tables. Each qlinear_<isa>.cpp (compiled with its own flags) defines
// `tcompress::<isa>::qlinear_kernels`; qlinear.cpp picks one with tc_isa_get(). Only plain data crosses this
// boundary (see kernel_table.h for why).
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

struct QLinearKernels {
  int (*qlinear)(const QLinearArgs& args);
};

namespace scalar {
extern const QLinearKernels qlinear_kernels;
}
namespace avx2 {
extern const QLinearKernels qlinear_kernels;
}
namespace avx512 {
extern const QLinearKernels qlinear_kernels;
}
// The bf16-x GEMM path with vdpbf16ps (qlinear_avx512_bf16.cpp; call only when the CPU reports AVX512_BF16):
// kQLinearNotHandled for arguments it does not take (then the avx512 kernels run), else a status.
constexpr int kQLinearNotHandled = -1;
namespace avx512bf16 {
int qlinear_gemm_bf16(const QLinearArgs& args);
}

}  // namespace tcompress
