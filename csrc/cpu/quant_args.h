// The arguments of the quant kernels (the entry points are declared in kernel_table.h).
#pragma once

#include <stdint.h>

namespace tcompress {

// tc_quantize_cpu after validation: group > 0 divides in_features; zeros is null exactly when symmetric.
struct QuantizeArgs {
  const void* w;
  int w_dtype;
  int64_t rows;          // out_features
  int64_t n;             // in_features
  int64_t w_row_stride;  // elements (n when rows <= 1)
  int64_t group;         // columns per group (n for per-channel)
  int bits;
  bool symmetric;
  uint8_t* codes;  // rows x n
  void* scales;    // rows x (n / group), scale_dtype
  int scale_dtype;
  uint8_t* zeros;  // rows x (n / group) or null
  int num_threads;
};

// tc_pack_int4_cpu / tc_unpack_int4_cpu after validation: n (codes per row) even; strides in bytes. Pack reads
// `codes` and writes `packed`; unpack the other way round.
struct PackArgs {
  uint8_t* codes;
  uint8_t* packed;
  int64_t rows;
  int64_t n;
  int64_t codes_row_stride;
  int64_t packed_row_stride;
  int num_threads;
};

// tc_dequantize_cpu after validation.
struct DequantizeArgs {
  const uint8_t* codes;
  bool packed;             // two int4 codes per byte (bits == 4, n even)
  int64_t rows;            // out_features
  int64_t n;               // in_features
  int64_t codes_row_stride;  // bytes
  const void* scales;
  int scale_dtype;
  const uint8_t* zeros;  // null: the implicit zero point 2^(bits-1)
  int bits;
  int64_t group;
  void* out;
  int out_dtype;
  int64_t out_row_stride;  // elements
  int num_threads;
};

}  // namespace tcompress
