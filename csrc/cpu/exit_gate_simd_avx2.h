// The operations the exit_gate kernels need beyond simd_avx2.h (8 fp32 lanes). Only for translation units
// compiled with the AVX2 flags; included after simd_avx2.h and exit_gate_simd_scalar.h (which documents exp).
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including exit_gate_simd_avx2.h"
#endif

#include <immintrin.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct GVecAvx2 : VecAvx2 {
  using M = __m256;  // all-ones lanes where a NaN was seen
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static T min(T a, T b) { return _mm256_min_ps(a, b); }
  static T clamp_exp_arg(T d) { return _mm256_max_ps(d, _mm256_set1_ps(kExpFloor)); }
  static T exp_nonpositive(T x) {
    const T n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    T p = _mm256_set1_ps(kExpP0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
    const T y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  static M no_nan() { return _mm256_setzero_ps(); }
  static M or_nan(M m, T x) { return _mm256_or_ps(m, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
  static bool any(M m) { return _mm256_movemask_ps(m) != 0; }
  static float hmax(T v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
