// The portable variant of the qlinear_a8 kernels: the integer tile in plain C++ (whatever the compiler makes of it
// for the baseline target). Same packed layout and arithmetic as the SIMD variants, so the same exact integers.
#define TC_ISA_NS scalar

#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct A8Tile {
  static constexpr const char* kName = "scalar";
  static constexpr int MR = 4, NR = 16;

  template <int R, bool INT4>
  static void tile(const int8_t* a, int64_t a_stride, const uint8_t* panel, int64_t t0, int64_t t1, int32_t* acc) {
    int32_t c[R][NR] = {};
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* w = panel + t * NR * 4;
      for (int r = 0; r < R; ++r) {
        const int8_t* ar = a + r * a_stride + 4 * t;
        for (int j = 0; j < NR; ++j) {
          c[r][j] += w[4 * j] * ar[0] + w[4 * j + 1] * ar[1] + w[4 * j + 2] * ar[2] + w[4 * j + 3] * ar[3];
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < NR; ++j) acc[r * NR + j] = c[r][j];
    }
  }

  template <int M, bool INT4, bool PG>
  static void gemv_row(const uint8_t* w, const int8_t* act, int64_t act_stride, int64_t K, int64_t group_size,
                       const float* s, const int32_t* corr, int64_t corr_stride, const float* xs, float* out) {
    const int32_t off = INT4 ? 0 : 128;
    for (int m = 0; m < M; ++m) {
      const int8_t* am = act + m * act_stride;
      float f = 0.0f;
      for (int64_t g = 0; g < K / group_size; ++g) {
        int32_t d = 0;
        for (int64_t k = g * group_size; k < (g + 1) * group_size; ++k) {
          if constexpr (INT4) {
            // [32 even | 32 odd] activation codes per 64 columns (qlinear_a8_kernel.h, gemv layout).
            const int64_t r = k % 64;
            const uint8_t byte = w[k / 2];
            const int32_t u = (k & 1) ? (byte >> 4) : (byte & 0x0F);
            d += u * am[k - r + (r & 1) * 32 + r / 2];
          } else {
            d += (static_cast<int32_t>(w[k]) - off) * am[k];
          }
        }
        f += static_cast<float>(d - corr[m * corr_stride + g]) * (PG ? s[g] * xs[m * corr_stride + g] : s[g]);
      }
      out[m] = f;
    }
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_a8_kernel.h"
