// Argument checks shared by the CPU and CUDA qlinear entry points (header-only: included by host C++ and by nvcc).
#pragma once

#include <stdint.h>

#include "tcompress/status.h"

namespace tcompress {

// Returns a tc_status: TC_OK when the arguments describe a valid call of tc_qlinear_cpu / tc_qlinear_cuda
// (see tcompress/qlinear.h). Pointers are only compared, never dereferenced.
inline int check_qlinear_args(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                              const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                              const uint8_t* zeros, int64_t group_size, const void* bias, int bias_dtype,
                              const void* y, int64_t y_row_stride) {
  const int xsize = tc_dtype_size(x_dtype);
  if (xsize == 0 || tc_dtype_size(scale_dtype) == 0 || (bias != nullptr && tc_dtype_size(bias_dtype) == 0)) {
    return TC_ERR_BAD_DTYPE;
  }
  if (bits != 4 && bits != 8) return TC_ERR_BAD_ARGUMENT;
  // Sizes: M may be 0; K and N at least 1 and small enough that no byte offset overflows int64.
  const int64_t kMaxDim = int64_t(1) << 31;
  if (M < 0 || M >= kMaxDim || K < 1 || K >= kMaxDim || N < 1 || N >= kMaxDim) return TC_ERR_BAD_SIZE;
  if (bits == 4 && K % 2 != 0) return TC_ERR_BAD_SIZE;
  if (group_size < 0 || group_size > K || (group_size > 0 && K % group_size != 0)) return TC_ERR_BAD_SIZE;
  if (qweight == nullptr || scales == nullptr) return TC_ERR_NULL_POINTER;
  if (M == 0) return TC_OK;
  if (x == nullptr || y == nullptr) return TC_ERR_NULL_POINTER;
  if (M > 1 && (x_row_stride < K || y_row_stride < N || x_row_stride >= kMaxDim * 4 || y_row_stride >= kMaxDim * 4)) {
    return TC_ERR_BAD_STRIDE;
  }
  // y must not overlap anything it is computed from.
  const int64_t xs = M > 1 ? x_row_stride : K, ys = M > 1 ? y_row_stride : N;
  const uintptr_t y0 = reinterpret_cast<uintptr_t>(y), y1 = y0 + static_cast<uintptr_t>(((M - 1) * ys + N) * xsize);
  const int64_t groups = group_size == 0 ? 1 : K / group_size;
  struct Span {
    const void* p;
    int64_t bytes;
  } inputs[] = {{x, ((M - 1) * xs + K) * xsize},
                {qweight, N * (bits == 4 ? K / 2 : K)},
                {scales, N * groups * tc_dtype_size(scale_dtype)},
                {zeros, N * groups},
                {bias, bias != nullptr ? N * tc_dtype_size(bias_dtype) : 0}};
  for (const Span& s : inputs) {
    if (s.p == nullptr) continue;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(s.p), a1 = a0 + static_cast<uintptr_t>(s.bytes);
    if (a0 < y1 && y0 < a1) return TC_ERR_BAD_ARGUMENT;
  }
  return TC_OK;
}

}  // namespace tcompress
