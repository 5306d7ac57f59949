// 8-lane AVX2/FMA/F16C vector for the kernel templates. Only for translation units compiled with -mavx2 -mfma -mf16c.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including simd_avx2.h"
#endif

#include <immintrin.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct VecAvx2 {
  using T = __m256;
  static constexpr int W = 8;
  static constexpr int NREG = 16;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T splat(float s) { return _mm256_set1_ps(s); }
  static T zero() { return _mm256_setzero_ps(); }

  // The first log2(8) = 3 butterfly stages, inside the register. Stage h pairs lane i with lane i^h; with
  // t = v permuted by i -> i^h, the result t + s*v (s = +1 where bit h of i is clear, -1 where set) is a+b in the
  // lower lane and a-b in the upper one. Multiplying by +-1 is exact, so the FMA rounds exactly like an add.
  static T intra(T v) {
    v = _mm256_fmadd_ps(v, _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1), _mm256_permute_ps(v, 0xB1));
    v = _mm256_fmadd_ps(v, _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1), _mm256_permute_ps(v, 0x4E));
    v = _mm256_fmadd_ps(v, _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1), _mm256_permute2f128_ps(v, v, 0x01));
    return v;
  }

  static T load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void store_f16(uint16_t* p, T v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static T load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static void store_bf16(uint16_t* p, T v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));  // nearest, ties to even
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc00000), nan);
    r = _mm256_srli_epi32(r, 16);
    // packus works per 128-bit half: [r0..r3 r0..r3 | r4..r7 r4..r7]; gather qwords 0 and 2.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
