// The operations the quant kernels need beyond simd_scalar.h, for the one-lane vector: the portable kernels and
// the tails of the SIMD ones. Included inside each quant TU after simd_scalar.h; internal linkage per TU.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including quant_simd_scalar.h"
#endif

#include <float.h>
#include <math.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

// Whole rows of packing: the portable loops (vectorized by the compiler where it can). Returns the OR of every
// code, so that the caller can tell whether any was above 15.
inline uint8_t pack_row_scalar(const uint8_t* codes, uint8_t* packed, int64_t n) {
  uint8_t seen = 0;
  for (int64_t j = 0; j < n / 2; ++j) {
    const uint8_t lo = codes[2 * j];
    const uint8_t hi = codes[2 * j + 1];
    seen |= lo | hi;
    packed[j] = static_cast<uint8_t>((lo & 0x0F) | (hi << 4));
  }
  return seen;
}

inline void unpack_row_scalar(const uint8_t* packed, uint8_t* codes, int64_t n) {
  for (int64_t j = 0; j < n / 2; ++j) {
    codes[2 * j] = packed[j] & 0x0F;
    codes[2 * j + 1] = packed[j] >> 4;
  }
}

struct QVecScalar : VecScalar {
  using M = bool;  // "every element seen so far is finite"
  static T abs(T v) { return fabsf(v); }
  static T min(T a, T b) { return a < b ? a : b; }
  static T max(T a, T b) { return a > b ? a : b; }
  static float hmin(T v) { return v; }
  static float hmax(T v) { return v; }
  static M all_true() { return true; }
  static M and_finite(M m, T v) { return m && fabsf(v) <= FLT_MAX; }  // false for NaN and +-Inf
  static bool all(M m) { return m; }
  static T div(T a, T b) { return a / b; }
  static T round_even(T v) { return nearbyintf(v); }  // the default rounding mode: to nearest, ties to even
  // v holds integers in [0, 255].
  static void store_codes(uint8_t* p, T v) { *p = static_cast<uint8_t>(static_cast<int>(v)); }
  static T load_codes(const uint8_t* p) { return static_cast<float>(*p); }
  static uint8_t pack_row(const uint8_t* codes, uint8_t* packed, int64_t n) { return pack_row_scalar(codes, packed, n); }
  static void unpack_row(const uint8_t* packed, uint8_t* codes, int64_t n) { unpack_row_scalar(packed, codes, n); }
  // n int4 codes (n a multiple of 32) from n / 2 packed bytes -> lut[code], 16-bit values.
  static void lookup_int4_u16(const uint8_t* packed, uint16_t* out, int64_t n, const uint16_t* lut) {
    for (int64_t j = 0; j < n / 2; ++j) {
      out[2 * j] = lut[packed[j] & 0x0F];
      out[2 * j + 1] = lut[packed[j] >> 4];
    }
  }
};

// Code i of a packed int4 row.
inline uint8_t int4_at(const uint8_t* packed_row, int64_t i) {
  return static_cast<uint8_t>((packed_row[i >> 1] >> ((i & 1) * 4)) & 0x0F);
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
