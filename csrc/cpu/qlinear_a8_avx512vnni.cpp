// The AVX-512 VNNI variant of the qlinear_a8 kernels: vpdpbusd (u8 weight codes x s8 activation codes, 4 products
// summed into each int32 lane, 64 multiply-adds per instruction, no intermediate saturation). Compiled with
// -mavx512vnni; the avx512 variant runs it only when the CPU reports AVX512_VNNI (dispatch.cpp).
//
// Tile: 6 rows x 64 columns = 24 zmm accumulators; per k4 block 4 weight loads, 6 broadcasts, 24 vpdpbusd.
#define TC_ISA_NS avx512vnni

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "qlinear_a8_row_avx2.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct A8Tile : A8RowAvx2 {
  static constexpr const char* kName = "avx512_vnni";
  static constexpr int MR = 6, NR = 64;

  template <int R, bool INT4>
  static void tile(const int8_t* a, int64_t a_stride, const uint8_t* panel, int64_t t0, int64_t t1, int32_t* acc) {
    __m512i c[R][4];
    for (int r = 0; r < R; ++r) c[r][0] = c[r][1] = c[r][2] = c[r][3] = _mm512_setzero_si512();
    const uint8_t* w = panel + t0 * NR * 4;
    const int8_t* ak = a + 4 * t0;
    for (int64_t t = t0; t < t1; ++t, w += NR * 4, ak += 4) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 8 * NR * 4), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w + 8 * NR * 4 + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w + 8 * NR * 4 + 128), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w + 8 * NR * 4 + 192), _MM_HINT_T0);
      const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
      const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
      for (int r = 0; r < R; ++r) {
        int32_t four;
        memcpy(&four, ak + r * a_stride, 4);
        const __m512i b = _mm512_set1_epi32(four);
        c[r][0] = _mm512_dpbusd_epi32(c[r][0], w0, b);
        c[r][1] = _mm512_dpbusd_epi32(c[r][1], w1, b);
        c[r][2] = _mm512_dpbusd_epi32(c[r][2], w2, b);
        c[r][3] = _mm512_dpbusd_epi32(c[r][3], w3, b);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < 4; ++v) _mm512_storeu_si512(acc + r * NR + 16 * v, c[r][v]);
    }
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_a8_kernel.h"
