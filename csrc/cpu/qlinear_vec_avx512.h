// QVec of the avx512 qlinear variants: the 16-lane AVX-512 vector with the integer operations qlinear_decode.h
// needs. Included by qlinear_avx512.cpp and qlinear_avx512_bf16.cpp (each with its own TC_ISA_NS).
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including qlinear_vec_avx512.h"
#endif

#include "simd_scalar.h"
#include "simd_avx512.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct QVec : VecAvx512 {
  using TI = __m512i;
  static TI loadi(const uint8_t* p) {
    TI v = _mm512_loadu_si512(p);
    // Keep the block in a register: GCC otherwise folds the load into every shift (one load per code field),
    // which ran the int8 GEMV at half speed.
    __asm__("" : "+v"(v));
    return v;
  }
  static TI loadi_partial(const uint8_t* p, int lanes) {
    return _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << lanes) - 1u), p);
  }
  // Table decoder (int4): vpermps looks up 16 floats with the low 4 bits of each lane and ignores the rest, so
  // code k of every lane becomes table[code] with one shift and one permute (no mask, no convert).
  static constexpr bool kTable = true;
  static T iota_magic() {
    return _mm512_add_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_ps(8388608.0f));
  }
  template <int SHIFT>
  static T table_field(TI v, T table) {
    return _mm512_permutexvar_ps(SHIFT ? _mm512_srli_epi32(v, SHIFT) : v, table);
  }
  // Two-group table (int4, group = half a block, i.e. 64 columns): lanes 0-7 look up t0, lanes 8-15 t1, with
  // vpermt2ps, whose index bit 4 picks the table: idx = ((v >> SHIFT) & 15) | hi, hi = 16 in lanes 8-15.
  static constexpr bool kTable2 = true;
  static TI table2_hi() {
    return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16);
  }
  template <int SHIFT>
  static T table2_field(TI v, TI hi, T t0, T t1) {
    const TI s = SHIFT ? _mm512_srli_epi32(v, SHIFT) : v;
    const TI idx = SHIFT + 4 == 32 ? _mm512_or_si512(s, hi) : _mm512_ternarylogic_epi32(s, _mm512_set1_epi32(15), hi, 0xEA);
    return _mm512_permutex2var_ps(t0, idx, t1);
  }
  // ((v >> SHIFT) & (2^BITS - 1)) | bits(2^23) per lane: one vpternlogd after the shift.
  template <int SHIFT, int BITS>
  static T field(TI v) {
    const TI magic = _mm512_set1_epi32(0x4B000000);
    const TI s = SHIFT ? _mm512_srli_epi32(v, SHIFT) : v;
    if constexpr (SHIFT + BITS == 32) return _mm512_castsi512_ps(_mm512_or_si512(s, magic));
    // (A & B) | C: truth table 0xEA over A = 0xF0, B = 0xCC, C = 0xAA.
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(s, _mm512_set1_epi32((1 << BITS) - 1), magic, 0xEA));
  }
  // Lane i takes element i / lanes_per_group of the loaded floats.
  static TI expand_index(int lanes_per_group) {
    alignas(64) int32_t idx[16];
    for (int i = 0; i < 16; ++i) idx[i] = i / lanes_per_group;
    return _mm512_load_si512(idx);
  }
  static T expand(const float* p, TI idx) { return _mm512_permutexvar_ps(idx, _mm512_loadu_ps(p)); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

