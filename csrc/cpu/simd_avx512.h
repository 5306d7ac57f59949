// 16-lane AVX-512 (F/BW/DQ/VL) vector for the kernel templates. Only for translation units compiled with the
// AVX-512 flags. BF16 conversion is done with integer ops so that CPUs without AVX512_BF16 run it too.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including simd_avx512.h"
#endif

#include <immintrin.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct VecAvx512 {
  using T = __m512;
  static constexpr int W = 16;
  static constexpr int NREG = 32;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T splat(float s) { return _mm512_set1_ps(s); }
  static T zero() { return _mm512_setzero_ps(); }

  // The first log2(16) = 4 butterfly stages inside the register (see VecAvx2::intra for the sign trick).
  static T intra(T v) {
    const T s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
    const T s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
    const T s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
    const T s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
    v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, 0xB1));       // lanes i <-> i^1
    v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, 0x4E));       // i <-> i^2
    v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, 0xB1));  // 128-bit blocks (0 1 2 3) -> (1 0 3 2)
    v = _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, 0x4E));  // 128-bit blocks (0 1 2 3) -> (2 3 0 1)
    return v;
  }

  static T load_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static void store_f16(uint16_t* p, T v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static T load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static void store_bf16(uint16_t* p, T v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));  // nearest, ties to even
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7fc00000));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
