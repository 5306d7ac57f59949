// Argument checks shared by the CPU and CUDA entry points of the quant family (tcompress/quant.h,
// tcompress/quant_cuda.h). Header-only, so that both the CPU library and the nvcc-built CUDA library get them
// without another source file in either build.
#pragma once

#include <stdint.h>

#include "tcompress/quant.h"
#include "tcompress/status.h"

namespace tcompress {
namespace quant_check {

// Largest element count we accept for one array: keeps every byte offset computation far from overflow.
constexpr int64_t kMaxElements = int64_t(1) << 50;

// A half-open byte range [first, last) of `rows` rows of `row_bytes` bytes, `stride_bytes` apart.
struct Span {
  uintptr_t first = 0;
  uintptr_t last = 0;
};

inline Span span_of(const void* base, int64_t rows, int64_t row_bytes, int64_t stride_bytes) {
  Span s;
  if (base == nullptr || rows <= 0 || row_bytes <= 0) return s;  // empty: overlaps nothing
  s.first = reinterpret_cast<uintptr_t>(base);
  s.last = s.first + static_cast<uintptr_t>((rows - 1) * stride_bytes + row_bytes);
  return s;
}

inline bool overlap(const Span& a, const Span& b) {
  return a.first < a.last && b.first < b.last && a.first < b.last && b.first < a.last;
}

// rows x cols within kMaxElements (both non-negative).
inline bool size_ok(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) return false;
  return cols == 0 || rows <= kMaxElements / cols;
}

// The row stride actually used: with at most one row the stride is never applied.
inline int64_t effective_stride(int64_t rows, int64_t stride, int64_t row_len) { return rows > 1 ? stride : row_len; }

inline bool stride_ok(int64_t rows, int64_t stride, int64_t row_len) {
  return rows <= 1 || (stride >= row_len && size_ok(rows, stride));
}

// The group length of a (group_size, in_features) pair, or 0 when it is invalid.
inline int64_t group_length(int64_t in_features, int64_t group_size) {
  if (in_features < 1 || group_size < 0) return 0;
  const int64_t g = group_size == 0 ? in_features : group_size;
  return in_features % g == 0 ? g : 0;
}

inline int check_quantize(const void* w, int w_dtype, int64_t out_features, int64_t in_features, int64_t w_row_stride,
                          int bits, int64_t group_size, int symmetric, const void* codes, const void* scales,
                          int scale_dtype, const void* zeros) {
  const int esize = tc_dtype_size(w_dtype);
  const int ssize = tc_dtype_size(scale_dtype);
  if (esize == 0 || ssize == 0) return TC_ERR_BAD_DTYPE;
  if (bits != 4 && bits != 8) return TC_ERR_BAD_SIZE;
  if (!size_ok(out_features, in_features)) return TC_ERR_BAD_SIZE;
  const int64_t g = group_length(in_features, group_size);
  if (g == 0) return TC_ERR_BAD_SIZE;
  if (out_features == 0) return TC_OK;
  if (w == nullptr || codes == nullptr || scales == nullptr) return TC_ERR_NULL_POINTER;
  if (symmetric && zeros != nullptr) return TC_ERR_BAD_ARGUMENT;
  if (!symmetric && zeros == nullptr) return TC_ERR_NULL_POINTER;
  if (!stride_ok(out_features, w_row_stride, in_features)) return TC_ERR_BAD_STRIDE;
  const int64_t groups = in_features / g;
  const int64_t ws = effective_stride(out_features, w_row_stride, in_features);
  const Span sw = span_of(w, out_features, in_features * esize, ws * esize);
  const Span sc = span_of(codes, 1, out_features * in_features, 0);
  const Span ss = span_of(scales, 1, out_features * groups * ssize, 0);
  const Span sz = span_of(zeros, 1, out_features * groups, 0);
  if (overlap(sw, sc) || overlap(sw, ss) || overlap(sw, sz) || overlap(sc, ss) || overlap(sc, sz) ||
      overlap(ss, sz)) {
    return TC_ERR_BAD_ARGUMENT;
  }
  return TC_OK;
}

// Pack (from = codes, n per row; to = packed, n / 2 per row) and unpack (from = packed, to = codes): n is the
// number of codes per row in both directions.
inline int check_pack(const void* codes, const void* packed, int64_t rows, int64_t n, int64_t codes_row_stride,
                      int64_t packed_row_stride) {
  if (!size_ok(rows, n) || n % 2 != 0) return TC_ERR_BAD_SIZE;
  if (rows == 0 || n == 0) return TC_OK;
  if (codes == nullptr || packed == nullptr) return TC_ERR_NULL_POINTER;
  if (!stride_ok(rows, codes_row_stride, n) || !stride_ok(rows, packed_row_stride, n / 2)) return TC_ERR_BAD_STRIDE;
  const Span sc = span_of(codes, rows, n, effective_stride(rows, codes_row_stride, n));
  const Span sp = span_of(packed, rows, n / 2, effective_stride(rows, packed_row_stride, n / 2));
  return overlap(sc, sp) ? TC_ERR_BAD_ARGUMENT : TC_OK;
}

inline int check_dequantize(const void* codes, int codes_format, int64_t out_features, int64_t in_features,
                            int64_t codes_row_stride, const void* scales, int scale_dtype, const void* zeros,
                            int bits, int64_t group_size, const void* out, int out_dtype, int64_t out_row_stride) {
  if (codes_format != TC_CODES_UINT8 && codes_format != TC_CODES_INT4_PACKED) return TC_ERR_BAD_DTYPE;
  const int ssize = tc_dtype_size(scale_dtype);
  const int osize = tc_dtype_size(out_dtype);
  if (ssize == 0 || osize == 0) return TC_ERR_BAD_DTYPE;
  if (bits != 4 && bits != 8) return TC_ERR_BAD_SIZE;
  if (codes_format == TC_CODES_INT4_PACKED && bits != 4) return TC_ERR_BAD_ARGUMENT;
  if (!size_ok(out_features, in_features)) return TC_ERR_BAD_SIZE;
  const int64_t g = group_length(in_features, group_size);
  if (g == 0) return TC_ERR_BAD_SIZE;
  const bool packed = codes_format == TC_CODES_INT4_PACKED;
  if (packed && in_features % 2 != 0) return TC_ERR_BAD_SIZE;
  if (out_features == 0) return TC_OK;
  if (codes == nullptr || scales == nullptr || out == nullptr) return TC_ERR_NULL_POINTER;
  const int64_t code_bytes = packed ? in_features / 2 : in_features;
  if (!stride_ok(out_features, codes_row_stride, code_bytes) || !stride_ok(out_features, out_row_stride, in_features)) {
    return TC_ERR_BAD_STRIDE;
  }
  const int64_t groups = in_features / g;
  const Span so = span_of(out, out_features, in_features * osize,
                          effective_stride(out_features, out_row_stride, in_features) * osize);
  const Span sc = span_of(codes, out_features, code_bytes, effective_stride(out_features, codes_row_stride, code_bytes));
  const Span ss = span_of(scales, 1, out_features * groups * ssize, 0);
  const Span sz = span_of(zeros, 1, out_features * groups, 0);
  if (overlap(so, sc) || overlap(so, ss) || overlap(so, sz)) return TC_ERR_BAD_ARGUMENT;
  return TC_OK;
}

}  // namespace quant_check
}  // namespace tcompress
