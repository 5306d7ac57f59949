// Argument checks shared by the CPU and CUDA linear_block entry points (header-only: host C++ and nvcc).
#pragma once

#include <stdint.h>

#include "tcompress/linear_block.h"
#include "tcompress/status.h"

namespace tcompress {

// Bytes per factor element of a tc_linear_block_* factor_dtype; 0 for an unknown code.
inline int linear_block_factor_size(int factor_dtype) {
  return factor_dtype == TC_LINEAR_BLOCK_INT8 ? 1 : tc_dtype_size(factor_dtype);
}

// Returns a tc_status: TC_OK when the arguments describe a valid call (see tcompress/linear_block.h). Pointers are
// only compared, never dereferenced.
inline int check_linear_block_args(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride,
                                   const void* U, const void* V, int factor_dtype, int64_t r, const float* u_scale,
                                   const float* v_scale, const void* b, int b_dtype, const void* mu, int mu_dtype,
                                   const void* y, int64_t y_row_stride) {
  const int xsize = tc_dtype_size(x_dtype), fsize = linear_block_factor_size(factor_dtype);
  if (xsize == 0 || fsize == 0 || tc_dtype_size(b_dtype) == 0 || tc_dtype_size(mu_dtype) == 0) return TC_ERR_BAD_DTYPE;
  const int64_t kMaxDim = int64_t(1) << 31;
  if (M < 0 || M >= kMaxDim || d < 1 || d >= kMaxDim || r < 1 || r >= kMaxDim) return TC_ERR_BAD_SIZE;
  if (U == nullptr || V == nullptr || b == nullptr || mu == nullptr) return TC_ERR_NULL_POINTER;
  const bool int8 = factor_dtype == TC_LINEAR_BLOCK_INT8;
  if (int8 && (u_scale == nullptr || v_scale == nullptr)) return TC_ERR_NULL_POINTER;
  if (!int8 && (u_scale != nullptr || v_scale != nullptr)) return TC_ERR_BAD_ARGUMENT;  // scales only for int8
  if (M == 0) return TC_OK;
  if (x == nullptr || y == nullptr) return TC_ERR_NULL_POINTER;
  if (M > 1 && (x_row_stride < d || y_row_stride < d || x_row_stride >= kMaxDim * 4 || y_row_stride >= kMaxDim * 4)) {
    return TC_ERR_BAD_STRIDE;
  }
  // y must not overlap anything it is computed from (x included: the kernels read x after writing some of y).
  const int64_t xs = M > 1 ? x_row_stride : d, ys = M > 1 ? y_row_stride : d;
  const uintptr_t y0 = reinterpret_cast<uintptr_t>(y), y1 = y0 + static_cast<uintptr_t>(((M - 1) * ys + d) * xsize);
  struct Span {
    const void* p;
    int64_t bytes;
  } inputs[] = {{x, ((M - 1) * xs + d) * xsize}, {U, d * r * fsize},     {V, r * d * fsize},
                {u_scale, r * 4},                {v_scale, d * 4},       {b, d * tc_dtype_size(b_dtype)},
                {mu, d * tc_dtype_size(mu_dtype)}};
  for (const Span& s : inputs) {
    if (s.p == nullptr) continue;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(s.p), a1 = a0 + static_cast<uintptr_t>(s.bytes);
    if (a0 < y1 && y0 < a1) return TC_ERR_BAD_ARGUMENT;
  }
  return TC_OK;
}

}  // namespace tcompress
