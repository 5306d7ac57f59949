// The scalar variant of the qlinear kernels: plain C++ for the baseline target (one-lane "vectors").
#define TC_ISA_NS scalar

#include "simd_scalar.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct QVec : VecScalar {
  using TI = uint32_t;
  static TI loadi(const uint8_t* p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;  // little-endian (x86, arm64): byte 0 in the low bits
  }
  // ((v >> SHIFT) & (2^BITS - 1)) in the mantissa of 2^23: the float 2^23 + field.
  template <int SHIFT, int BITS>
  static T field(TI v) {
    return bits_to_float(((v >> SHIFT) & ((1u << BITS) - 1u)) | 0x4B000000u);
  }
  static TI loadi_partial(const uint8_t* p, int lanes) { return lanes > 0 ? loadi(p) : 0u; }
  // No 16-entry permute: the table decoder is not used.
  static constexpr bool kTable = false;
  static constexpr bool kTable2 = false;  // (nor the two-group one)
  static TI table2_hi() { return TI{}; }
  template <int SHIFT>
  static T table2_field(TI, TI, T, T) { return 0.0f; }
  static T iota_magic() { return 0.0f; }
  template <int SHIFT>
  static T table_field(TI, T) { return 0.0f; }
  static TI expand_index(int) { return 0; }
  static T expand(const float* p, TI) { return *p; }
  static float hsum(T v) { return v; }
  static void prefetch(const void*) {}
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_kernel.h"
