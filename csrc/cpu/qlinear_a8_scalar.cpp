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
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_a8_kernel.h"
