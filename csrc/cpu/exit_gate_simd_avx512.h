// The operations the exit_gate kernels need beyond simd_avx512.h (16 fp32 lanes). Only for translation units
// compiled with the AVX-512 flags; included after simd_avx512.h and exit_gate_simd_scalar.h (which documents exp).
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including exit_gate_simd_avx512.h"
#endif

#include <immintrin.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct GVecAvx512 : VecAvx512 {
  using M = __mmask16;  // lanes where a NaN was seen
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static T min(T a, T b) { return _mm512_min_ps(a, b); }
  static T clamp_exp_arg(T d) { return _mm512_max_ps(d, _mm512_set1_ps(kExpFloor)); }
  static T exp_nonpositive(T x) {
    const T n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
    T p = _mm512_set1_ps(kExpP0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP5));
    const T y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  }
  static M no_nan() { return 0; }
  static M or_nan(M m, T x) { return static_cast<M>(m | _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)); }
  static bool any(M m) { return m != 0; }
  static float hmax(T v) { return _mm512_reduce_max_ps(v); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
