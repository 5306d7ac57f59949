// The AVX2 variant of the qlinear_a8 kernels: vpmaddubsw (u8 x s8 -> int16 pairs) + vpmaddwd (-> int32).
// vpmaddubsw saturates its int16 pair sums: int4 codes (<= 15) give at most 2 * 15 * 128 = 3840, safe; int8 codes
// (<= 255) could reach 2 * 255 * 128 = 65280, so they are split into nibbles, u = 16 hi + lo, each nibble product
// pair safe, and recombined exactly in int32 by vpmaddwd with weights 16 and 1.
// Also the fallback of the avx512 variant on CPUs without AVX512_VNNI (see dispatch.cpp).
#define TC_ISA_NS avx2

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "qlinear_a8_row_avx2.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct A8Tile : A8RowAvx2 {
  static constexpr const char* kName = "avx2";
  static constexpr int MR = 4, NR = 16;  // 2 ymm of 8 int32 columns; 8 accumulators

  template <int R, bool INT4>
  static void tile(const int8_t* a, int64_t a_stride, const uint8_t* panel, int64_t t0, int64_t t1, int32_t* acc) {
    __m256i c[R][2];
    for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16), nibble = _mm256_set1_epi8(0x0F);
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* w = panel + t * NR * 4;
      __m256i wv[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)),
                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32))};
      for (int r = 0; r < R; ++r) {
        int32_t four;
        memcpy(&four, a + r * a_stride + 4 * t, 4);
        const __m256i b = _mm256_set1_epi32(four);
        for (int v = 0; v < 2; ++v) {
          if constexpr (INT4) {
            c[r][v] = _mm256_add_epi32(c[r][v], _mm256_madd_epi16(_mm256_maddubs_epi16(wv[v], b), ones));
          } else {
            const __m256i lo = _mm256_and_si256(wv[v], nibble);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv[v], 4), nibble);
            const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, b), ones);
            const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, b), sixteens);
            c[r][v] = _mm256_add_epi32(c[r][v], _mm256_add_epi32(plo, phi));
          }
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * NR), c[r][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * NR + 8), c[r][1]);
    }
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_a8_kernel.h"
