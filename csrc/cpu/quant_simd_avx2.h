// The operations the quant kernels need beyond simd_avx2.h (8 fp32 lanes). Only for translation units compiled
// with the AVX2 flags; included after simd_avx2.h and quant_simd_scalar.h.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including quant_simd_avx2.h"
#endif

#include <float.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct QVecAvx2 : VecAvx2 {
  using M = __m256;  // all-ones lanes where every element seen so far is finite
  static T abs(T v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static T min(T a, T b) { return _mm256_min_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static float hmin(T v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static float hmax(T v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static M all_true() { return _mm256_castsi256_ps(_mm256_set1_epi32(-1)); }
  static M and_finite(M m, T v) { return _mm256_and_ps(m, _mm256_cmp_ps(abs(v), _mm256_set1_ps(FLT_MAX), _CMP_LE_OQ)); }
  static bool all(M m) { return _mm256_movemask_ps(m) == 0xFF; }
  static T div(T a, T b) { return _mm256_div_ps(a, b); }
  static T round_even(T v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // v holds integers in [0, 255]: 8 bytes.
  static void store_codes(uint8_t* p, T v) {
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m256i i16 = _mm256_packs_epi32(i32, i32);   // [a0..a3 a0..a3 | a4..a7 a4..a7]
    const __m256i u8 = _mm256_packus_epi16(i16, i16);   // dword 0: a0..a3, dword 4: a4..a7
    const __m256i both = _mm256_permutevar8x32_epi32(u8, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(both));
  }
  static T load_codes(const uint8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  // 8 int4 codes from 4 packed bytes (code 2j in the low nibble of byte j).
  static T load_codes_int4(const uint8_t* p) {
    int32_t word;
    memcpy(&word, p, sizeof(word));
    const __m128i b = _mm_cvtsi32_si128(word);
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i codes = _mm_unpacklo_epi8(_mm_and_si128(b, nib), _mm_and_si128(_mm_srli_epi16(b, 4), nib));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
  }
  // A row of n codes (n even) -> n / 2 packed bytes; returns the OR of every code (> 15: a bad code).
  static uint8_t pack_row(const uint8_t* codes, uint8_t* packed, int64_t n);
  static void unpack_row(const uint8_t* packed, uint8_t* codes, int64_t n);
  // n int4 codes (n a multiple of 32) from n / 2 packed bytes -> lut[code] (16 16-bit entries), 32 per step: the
  // low and the high bytes of the entries are two 16-byte tables for pshufb.
  static void lookup_int4_u16(const uint8_t* packed, uint16_t* out, int64_t n, const uint16_t* lut) {
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i t0 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lut)), split);
    const __m128i t1 = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + 8)), split);
    const __m256i tlo = _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(t0, t1));  // low bytes of entries 0..15
    const __m256i thi = _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(t0, t1));  // high bytes
    const __m128i nib = _mm_set1_epi8(0x0F);
    for (int64_t i = 0; i < n; i += 32) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2));
      const __m128i lo = _mm_and_si128(b, nib);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), nib);
      // Codes i .. i + 15 and i + 16 .. i + 31, in order, one per byte.
      const __m256i codes = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
      const __m256i vlo = _mm256_shuffle_epi8(tlo, codes);
      const __m256i vhi = _mm256_shuffle_epi8(thi, codes);
      const __m256i r0 = _mm256_unpacklo_epi8(vlo, vhi);  // entries of codes 0..7 | 16..23
      const __m256i r1 = _mm256_unpackhi_epi8(vlo, vhi);  // 8..15 | 24..31
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_permute2x128_si256(r0, r1, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 16), _mm256_permute2x128_si256(r0, r1, 0x31));
    }
  }
};

inline uint8_t QVecAvx2::pack_row(const uint8_t* codes, uint8_t* packed, int64_t n) {
  const __m256i lo_mask = _mm256_set1_epi16(0x000F);
  const __m256i hi_mask = _mm256_set1_epi16(0x00F0);
  __m256i seen = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i + 32));
    seen = _mm256_or_si256(seen, _mm256_or_si256(a, b));
    // As 16-bit lanes, a pair is c0 | c1 << 8; (pair >> 4) & 0xF0 is c1's low nibble moved to bits 4..7.
    const __m256i pa = _mm256_or_si256(_mm256_and_si256(a, lo_mask), _mm256_and_si256(_mm256_srli_epi16(a, 4), hi_mask));
    const __m256i pb = _mm256_or_si256(_mm256_and_si256(b, lo_mask), _mm256_and_si256(_mm256_srli_epi16(b, 4), hi_mask));
    // packus works per 128-bit half: [pa0 pb0 | pa1 pb1] -> reorder the quadwords to [pa0 pa1 pb0 pb1].
    const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(pa, pb), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + i / 2), bytes);
  }
  __m128i s = _mm_or_si128(_mm256_castsi256_si128(seen), _mm256_extracti128_si256(seen, 1));
  s = _mm_or_si128(s, _mm_srli_si128(s, 8));
  s = _mm_or_si128(s, _mm_srli_si128(s, 4));
  s = _mm_or_si128(s, _mm_srli_si128(s, 2));
  s = _mm_or_si128(s, _mm_srli_si128(s, 1));
  const uint8_t vec_seen = static_cast<uint8_t>(_mm_cvtsi128_si32(s));
  return vec_seen | pack_row_scalar(codes + i, packed + i / 2, n - i);
}

inline void QVecAvx2::unpack_row(const uint8_t* packed, uint8_t* codes, int64_t n) {
  const __m256i lo_mask = _mm256_set1_epi16(0x000F);
  const __m256i hi_mask = _mm256_set1_epi16(0x0F00);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // Each packed byte p widened to a 16-bit lane becomes (p & 0xF) | (p >> 4) << 8: two codes, in order.
    const __m256i p = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2)));
    const __m256i c = _mm256_or_si256(_mm256_and_si256(p, lo_mask), _mm256_and_si256(_mm256_slli_epi16(p, 4), hi_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), c);
  }
  unpack_row_scalar(packed + i / 2, codes + i, n - i);
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
