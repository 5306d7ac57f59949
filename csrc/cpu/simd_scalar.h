// Portable "vector" of one float, and exact software conversions to and from fp16/bf16 (round to nearest even,
// NaN kept NaN). Included inside `namespace tcompress::TC_ISA_NS { namespace {` by every kernel translation
// unit, so each one gets its own internal-linkage copy compiled with its own flags.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS (the ISA namespace) before including simd_scalar.h"
#endif

#include <stdint.h>
#include <string.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

inline float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN: the canonical quiet NaN, as torch does
  u += 0x7fffu + ((u >> 16) & 1u);                      // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in fp32.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t float_to_f16(float f) {
  uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // |f| >= 65520 rounds to infinity (65504 is the largest half)
  if (u < 0x38800000u) {
    // |f| < 2^-14: a subnormal half (or zero). Adding 0.5 moves the value into the binade whose ulp is 2^-24,
    // the half subnormal spacing, so the FPU's own round-to-nearest-even does the rounding.
    const float shifted = bits_to_float(u) + 0.5f;
    return sign | static_cast<uint16_t>(float_to_bits(shifted) - 0x3f000000u);
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;  // rebias the exponent, round to nearest even
  return sign | static_cast<uint16_t>(u >> 13);
}

// One-lane vector: the portable kernels, and the tail path of the SIMD kernels for rows shorter than a vector.
struct VecScalar {
  using T = float;
  static constexpr int W = 1;
  static constexpr int NREG = 16;
  static T load(const float* p) { return *p; }
  static void store(float* p, T v) { *p = v; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T fmadd(T a, T b, T c) { return a * b + c; }
  static T splat(float s) { return s; }
  static T zero() { return 0.0f; }
  static T intra(T v) { return v; }  // a one-lane vector has no in-register butterfly stages
  static T load_f16(const uint16_t* p) { return f16_to_float(*p); }
  static void store_f16(uint16_t* p, T v) { *p = float_to_f16(v); }
  static T load_bf16(const uint16_t* p) { return bf16_to_float(*p); }
  static void store_bf16(uint16_t* p, T v) { *p = float_to_bf16(v); }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
