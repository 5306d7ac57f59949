// Decoding qlinear weights without unpacking them, shared by the GEMV path (qlinear_gemv.h), the GEMM path
// (qlinear_gemm.h) and the bf16 GEMM (qlinear_avx512_bf16.cpp). Included by a qlinear_<isa>.cpp after it defines
// TC_ISA_NS and QVec: its simd_<isa>.h vector type plus the integer loads, field extraction and table lookups
// these paths use (see qlinear_scalar.cpp for the full list).
//
// Decoding codes without unpacking. A vector of W 32-bit lanes loaded from a weight row holds, per lane, PER =
// 32 / bits consecutive codes (8 nibbles or 4 bytes). Field k of every lane is ((v >> k*bits) & mask), and OR-ing
// it into the mantissa of 2^23 gives the float 2^23 + u exactly; subtracting the vector (2^23 + z) then gives
// u - z exactly, zero point included, in one shift, one and/or (a single vpternlogd on AVX-512) and one subtract.
// So one block of BC = PER * W columns decodes to PER vectors, vector k holding the columns {PER*i + k}. Instead
// of interleaving the weights, the kernels permute x (once per call) to the same order: within every full block,
// position k*W + i holds column PER*i + k. Columns after the last full block (K % BC of them) keep their order
// and are handled one by one, as are all columns when the group size is not a multiple of PER (a lane would
// straddle two groups).
//
// Scales: a lane never straddles a group, so a block has one scale per lane. When the group size is a multiple
// of BC (or there is one group per row), whole groups are accumulated unscaled and folded into the row
// accumulator with one FMA (acc += s * acc_group); when it divides BC, each block's lane scales are expanded
// from the row's scales by a permute; otherwise they are gathered lane by lane.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS and QVec before including qlinear_decode.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>
#include <utility>

#include "qlinear_args.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

constexpr float kMagic = 8388608.0f;  // 2^23: its float has the integer u in its low mantissa bits

template <int N, class F, int... Ks>
inline void static_for_impl(F&& f, std::integer_sequence<int, Ks...>) {
  (f(std::integral_constant<int, Ks>{}), ...);
}
// f(std::integral_constant<int, 0>) ... f(std::integral_constant<int, N - 1>), unrolled at compile time.
template <int N, class F>
inline void static_for(F&& f) {
  static_for_impl<N>(f, std::make_integer_sequence<int, N>{});
}

inline float load_param(const void* p, int64_t i, int dtype) {
  if (dtype == TC_FLOAT32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dtype == TC_FLOAT16 ? f16_to_float(h) : bf16_to_float(h);
}

inline void store_value(void* row, int64_t i, int dtype, float v) {
  if (dtype == TC_FLOAT32) {
    static_cast<float*>(row)[i] = v;
  } else if (dtype == TC_FLOAT16) {
    static_cast<uint16_t*>(row)[i] = float_to_f16(v);
  } else {
    static_cast<uint16_t*>(row)[i] = float_to_bf16(v);
  }
}

inline void* aligned_floats(int64_t n) {
  const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
  return aligned_alloc(64, bytes == 0 ? 64 : bytes);
}

// How a weight row's columns are processed (see the top of the file).
template <class V, int BITS>
struct Layout {
  static constexpr int PER = 32 / BITS;  // codes per 32-bit lane
  static constexpr int BC = PER * V::W;  // columns per vector block
  static constexpr int BB = 4 * V::W;    // bytes per vector block
  enum Mode { kWholeGroups, kSplitBlocks, kGatherLanes };

  int64_t K, g, groups;
  int64_t kfull;   // columns in full vector blocks (a multiple of BC)
  int tail_lanes;  // lanes of the partial block after them (0: none); its other lanes meet zeros in x
  int64_t kvec;    // permuted positions covered by vector blocks: kfull, plus BC with a partial block
  int64_t kel;     // columns [kel, K) are handled one by one, at permuted positions kvec + (c - kel)
  int64_t P;       // length of the permuted order
  Mode mode;
  bool table;  // int4 whole groups on a vector type with a 16-entry permute: decode through a per-group table

  Layout(int64_t K_, int64_t g_, int64_t groups_) : K(K_), g(g_), groups(groups_) {
    // A lane never straddles two groups when a group is a whole number of lanes (or the row is one group).
    const bool lanes_ok = groups == 1 || g % PER == 0;
    kfull = lanes_ok ? K - K % BC : 0;
    tail_lanes = lanes_ok ? static_cast<int>((K % BC) / PER) : 0;
    kvec = kfull + (tail_lanes > 0 ? BC : 0);
    kel = kfull + tail_lanes * PER;
    P = kvec + (K - kel);
    if (groups == 1 || g % BC == 0 || !lanes_ok) {
      mode = kWholeGroups;  // (without lanes_ok there are no vector blocks)
    } else if (BC % g == 0) {
      mode = kSplitBlocks;
    } else {
      mode = kGatherLanes;
    }
    table = V::kTable && BITS == 4 && mode == kWholeGroups;
    groups_per_block = mode == kSplitBlocks ? BC / g : 0;
    table2 = V::kTable2 && BITS == 4 && mode == kSplitBlocks && groups_per_block == 2;
  }
  int64_t groups_per_block;  // split mode: BC / g
  bool table2;  // int4, two groups per block, with a 32-entry two-table permute: decode through two group tables
  int64_t full_blocks() const { return kfull / BC; }
  int64_t blocks() const { return kvec / BC; }
};

inline uint32_t code_at(const uint8_t* wrow, int64_t c, int bits) {
  if (bits == 8) return wrow[c];
  return (wrow[c >> 1] >> ((c & 1) * 4)) & 0xFu;
}

// The 32-bit lanes of block b of a weight row (the partial block: its lanes, zeros after).
// (nfull = lay.full_blocks() and tail_lanes are passed by value so that the hot loops keep them in registers.)
template <class V, int BITS>
inline typename V::TI load_block(const uint8_t* wrow, int64_t b, int64_t nfull, int tail_lanes) {
  const uint8_t* p = wrow + b * Layout<V, BITS>::BB;
  return b < nfull ? V::loadi(p) : V::loadi_partial(p, tail_lanes);
}

// x row (any dtype) -> fp32 in the permuted order of `lay` (P floats).
template <class V, int BITS>
void permute_row(const void* xrow, int dtype, const Layout<V, BITS>& lay, float* out) {
  constexpr int PER = Layout<V, BITS>::PER, W = V::W, BC = Layout<V, BITS>::BC;
  for (int64_t c0 = 0; c0 < lay.kvec; c0 += BC) {
    const int lanes = c0 < lay.kfull ? W : lay.tail_lanes;
    for (int i = 0; i < W; ++i) {
      for (int k = 0; k < PER; ++k) out[c0 + k * W + i] = i < lanes ? load_param(xrow, c0 + i * PER + k, dtype) : 0.0f;
    }
  }
  for (int64_t c = lay.kel; c < lay.K; ++c) out[lay.kvec + (c - lay.kel)] = load_param(xrow, c, dtype);
}

// The row's scales and zero points of groups [g0, g1) as fp32 (zero points as 2^23 + z), `slack` more entries
// of scale 0 (read by lanes past the end of the row, which meet zeros in x). With zeros_filled (symmetric codes,
// zbuf already holds 2^23 + 2^(bits-1) everywhere) only the scales are written. One loop per dtype, which the
// compiler vectorizes: at short K this runs once per handful of blocks and the per-element dtype switch cost
// as much as the blocks.
inline void row_params(const QLinearArgs& a, int64_t n, int64_t g0, int64_t g1, float* sbuf, float* zbuf, int slack,
                       bool zeros_filled = false) {
  const int64_t cnt = g1 - g0, base = n * a.groups + g0;
  if (a.scale_dtype == TC_FLOAT32) {
    memcpy(sbuf, static_cast<const float*>(a.scales) + base, static_cast<size_t>(cnt) * sizeof(float));
  } else if (a.scale_dtype == TC_BFLOAT16) {
    const uint16_t* p = static_cast<const uint16_t*>(a.scales) + base;
    for (int64_t j = 0; j < cnt; ++j) sbuf[j] = bf16_to_float(p[j]);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(a.scales) + base;
    for (int64_t j = 0; j < cnt; ++j) sbuf[j] = f16_to_float(p[j]);
  }
  for (int j = 0; j < slack; ++j) sbuf[cnt + j] = 0.0f;
  if (zeros_filled) return;
  if (a.zeros) {
    for (int64_t j = 0; j < cnt; ++j) zbuf[j] = kMagic + static_cast<float>(a.zeros[base + j]);
  } else {
    const float zsym = kMagic + static_cast<float>(1 << (a.bits - 1));
    for (int64_t j = 0; j < cnt; ++j) zbuf[j] = zsym;
  }
  for (int j = 0; j < slack; ++j) zbuf[cnt + j] = kMagic;
}

// Lane scale and zero vectors of the block starting at column c0, for the split and gather modes. sbuf/zbuf
// hold the groups [g_base, g_end) and then the slack.
template <class V, int BITS>
inline void lane_params(const Layout<V, BITS>& lay, const typename V::TI& idx, int64_t c0, int64_t g_base,
                        int64_t g_end, const float* sbuf, const float* zbuf, typename V::T& sv, typename V::T& zv) {
  using L = Layout<V, BITS>;
  if (lay.mode == L::kSplitBlocks) {
    const int64_t j = (c0 / L::BC) * lay.groups_per_block - g_base;  // c0 / g without a division
    sv = V::expand(sbuf + j, idx);
    zv = V::expand(zbuf + j, idx);
  } else {
    alignas(64) float st[V::W], zt[V::W];
    for (int i = 0; i < V::W; ++i) {
      const int64_t c = c0 + i * L::PER;
      const int64_t j = (c < lay.K ? c / lay.g : g_end) - g_base;
      st[i] = sbuf[j];
      zt[i] = zbuf[j];
    }
    sv = V::load(st);
    zv = V::load(zt);
  }
}

// The 16 dequantized values of a group for the table decoder: (u - z) * s for u = 0 .. 15 (zm = 2^23 + z).
template <class V>
inline typename V::T group_table(float s, float zm) {
  return V::mul(V::sub(V::iota_magic(), V::splat(zm)), V::splat(s));
}

// Scale and zero point (as 2^23 + z) of group j of row n.
inline void group_params(const QLinearArgs& a, int64_t n, int64_t j, float& s, float& zm) {
  const int64_t i = n * a.groups + j;
  s = load_param(a.scales, i, a.scale_dtype);
  zm = kMagic + static_cast<float>(a.zeros ? a.zeros[i] : (1u << (a.bits - 1)));
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
