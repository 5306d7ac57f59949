// The avx2 variant of the qlinear kernels (AVX2 + FMA + F16C flags); only called after the CPU reports them.
#define TC_ISA_NS avx2

#include "simd_scalar.h"
#include "simd_avx2.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct QVec : VecAvx2 {
  using TI = __m256i;
  static TI loadi(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static TI loadi_partial(const uint8_t* p, int lanes) {
    const TI lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_epi32(reinterpret_cast<const int*>(p), _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane));
  }
  // vpermps on 8 lanes indexes only 8 entries: the table decoder is not used.
  static constexpr bool kTable = false;
  static constexpr bool kTable2 = false;  // (nor the two-group one)
  static TI table2_hi() { return TI{}; }
  template <int SHIFT>
  static T table2_field(TI, TI, T, T) { return zero(); }
  static T iota_magic() { return zero(); }
  template <int SHIFT>
  static T table_field(TI, T) { return zero(); }
  // ((v >> SHIFT) & (2^BITS - 1)) in the mantissa of 2^23, per lane: the floats 2^23 + field.
  template <int SHIFT, int BITS>
  static T field(TI v) {
    const TI magic = _mm256_set1_epi32(0x4B000000);
    const TI s = SHIFT ? _mm256_srli_epi32(v, SHIFT) : v;
    if constexpr (SHIFT + BITS == 32) return _mm256_castsi256_ps(_mm256_or_si256(s, magic));
    return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(s, _mm256_set1_epi32((1 << BITS) - 1)), magic));
  }
  // Lane i takes element i / lanes_per_group of the loaded floats.
  static TI expand_index(int lanes_per_group) {
    alignas(32) int32_t idx[8];
    for (int i = 0; i < 8; ++i) idx[i] = i / lanes_per_group;
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
  }
  static T expand(const float* p, TI idx) { return _mm256_permutevar8x32_ps(_mm256_loadu_ps(p), idx); }
  static float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "qlinear_kernel.h"
