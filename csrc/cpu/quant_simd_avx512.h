// The operations the quant kernels need beyond simd_avx512.h (16 fp32 lanes; F/BW/DQ/VL). Only for translation
// units compiled with the AVX-512 flags; included after simd_avx512.h and quant_simd_scalar.h.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including quant_simd_avx512.h"
#endif

#include <float.h>
#include <immintrin.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct QVecAvx512 : VecAvx512 {
  using M = __mmask16;  // set lanes: every element seen so far is finite
  static T abs(T v) { return _mm512_abs_ps(v); }
  static T min(T a, T b) { return _mm512_min_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static float hmin(T v) { return _mm512_reduce_min_ps(v); }
  static float hmax(T v) { return _mm512_reduce_max_ps(v); }
  static M all_true() { return static_cast<__mmask16>(0xFFFF); }
  static M and_finite(M m, T v) { return _mm512_mask_cmp_ps_mask(m, abs(v), _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ); }
  static bool all(M m) { return m == 0xFFFF; }
  static T div(T a, T b) { return _mm512_div_ps(a, b); }
  static T round_even(T v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // v holds integers in [0, 255]: 16 bytes.
  static void store_codes(uint8_t* p, T v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  static T load_codes(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  // 16 int4 codes from 8 packed bytes (code 2j in the low nibble of byte j).
  static T load_codes_int4(const uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    const __m128i nib = _mm_set1_epi8(0x0F);
    const __m128i codes = _mm_unpacklo_epi8(_mm_and_si128(b, nib), _mm_and_si128(_mm_srli_epi16(b, 4), nib));
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
  }
  // A row of n codes (n even) -> n / 2 packed bytes; returns the OR of every code (> 15: a bad code).
  static uint8_t pack_row(const uint8_t* codes, uint8_t* packed, int64_t n);
  static void unpack_row(const uint8_t* packed, uint8_t* codes, int64_t n);
  // n int4 codes (n a multiple of 32) from n / 2 packed bytes -> lut[code] (16 16-bit entries), 32 per step.
  static void lookup_int4_u16(const uint8_t* packed, uint16_t* out, int64_t n, const uint16_t* lut) {
    const __m512i table = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut)));
    const __m512i lo = _mm512_set1_epi32(0x0000000F);
    const __m512i hi = _mm512_set1_epi32(0x000F0000);
    for (int64_t i = 0; i < n; i += 32) {
      // 32-bit lane j holds packed byte j; as two 16-bit lanes, (b & 0xF, b >> 4) are codes 2j and 2j + 1.
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2)));
      const __m512i idx = _mm512_or_si512(_mm512_and_si512(b, lo), _mm512_and_si512(_mm512_slli_epi32(b, 12), hi));
      _mm512_storeu_si512(out + i, _mm512_permutexvar_epi16(idx, table));
    }
  }
};

inline uint8_t QVecAvx512::pack_row(const uint8_t* codes, uint8_t* packed, int64_t n) {
  const __m512i lo_mask = _mm512_set1_epi16(0x000F);
  const __m512i hi_mask = _mm512_set1_epi16(0x00F0);
  __m512i seen = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i a = _mm512_loadu_si512(codes + i);
    seen = _mm512_or_si512(seen, a);
    // As 16-bit lanes, a pair is c0 | c1 << 8; (pair >> 4) & 0xF0 is c1's low nibble moved to bits 4..7.
    const __m512i pairs = _mm512_or_si512(_mm512_and_si512(a, lo_mask), _mm512_and_si512(_mm512_srli_epi16(a, 4), hi_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + i / 2), _mm512_cvtepi16_epi8(pairs));
  }
  const bool vec_bad = _mm512_test_epi8_mask(seen, _mm512_set1_epi8(static_cast<char>(0xF0))) != 0;
  return static_cast<uint8_t>((vec_bad ? 0xF0 : 0) | pack_row_scalar(codes + i, packed + i / 2, n - i));
}

inline void QVecAvx512::unpack_row(const uint8_t* packed, uint8_t* codes, int64_t n) {
  const __m512i lo_mask = _mm512_set1_epi16(0x000F);
  const __m512i hi_mask = _mm512_set1_epi16(0x0F00);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    // Each packed byte p widened to a 16-bit lane becomes (p & 0xF) | (p >> 4) << 8: two codes, in order.
    const __m512i p = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i / 2)));
    const __m512i c = _mm512_or_si512(_mm512_and_si512(p, lo_mask), _mm512_and_si512(_mm512_slli_epi16(p, 4), hi_mask));
    _mm512_storeu_si512(codes + i, c);
  }
  unpack_row_scalar(packed + i / 2, codes + i, n - i);
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
