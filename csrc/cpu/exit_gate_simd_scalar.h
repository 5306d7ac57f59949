// The operations the exit_gate kernels need beyond simd_scalar.h, for the one-lane vector (the portable kernels).
// Included inside each exit_gate TU after simd_scalar.h; internal linkage per TU.
//
// exp_nonpositive is the same range-reduced polynomial in every variant (so the ISAs agree to rounding):
// x = max(d, -88); n = round(x / ln 2); r = x - n ln 2 (ln 2 split in two parts, exact product for the first);
// e^r ~= 1 + r + r^2 P(r) with the degree-5 P of Cephes' expf (relative error ~2e-7 on |r| <= ln2 / 2);
// 2^n is built in the exponent bits, and n = -127 (x < -87.68) gives exactly 0, which is how -inf logits
// contribute nothing.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including exit_gate_simd_scalar.h"
#endif

#include <math.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

constexpr float kExpFloor = -88.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

struct GVecScalar : VecScalar {
  using M = bool;  // "a NaN was seen"
  static T max(T a, T b) { return a > b ? a : b; }
  static T min(T a, T b) { return a < b ? a : b; }
  static T clamp_exp_arg(T d) { return d > kExpFloor ? d : kExpFloor; }
  // e^x for x in [-88, 0] (clamp_exp_arg first).
  static T exp_nonpositive(T x) {
    const float n = nearbyintf(x * kLog2e);
    float r = x - n * kLn2Hi;
    r = r - n * kLn2Lo;
    float p = kExpP0;
    p = p * r + kExpP1;
    p = p * r + kExpP2;
    p = p * r + kExpP3;
    p = p * r + kExpP4;
    p = p * r + kExpP5;
    const float y = p * r * r + r + 1.0f;
    return y * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  }
  static M no_nan() { return false; }
  static M or_nan(M m, T x) { return m || x != x; }
  static bool any(M m) { return m; }
  static float hmax(T v) { return v; }
  static float hsum(T v) { return v; }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
