// The CPU qlinear kernels, written once over a vector type and compiled once per ISA.
//
// Each qlinear_<isa>.cpp defines TC_ISA_NS and QVec (its vector type extended with the few integer operations
// below) and includes this file, which defines tcompress::<isa>::qlinear_kernels.
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
//
// GEMV path (M <= TC_QLINEAR_GEMV_MAX_M): threads split the output rows; each weight row is streamed once and
// dotted with all M rows of x at once. GEMM path (larger M): for each block of NC output rows and KC columns, the
// weights are dequantized ((u - z) * s, exactly what the reference computes) into an fp32 panel, and a
// register-blocked micro-kernel computes R output rows x MB rows of x at a time, broadcasting weights and loading
// x from a transposed copy (k-major, MB rows of x per k), accumulating into a per-thread fp32 tile C^T.
#pragma once

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>
#include <utility>

#include "qlinear_table.h"
#include "tcompress/qlinear.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

constexpr float kMagic = 8388608.0f;         // 2^23: its float has the integer u in its low mantissa bits
constexpr uint32_t kMagicBits = 0x4B000000u;  // bits of 2^23
// GEMV calls below this many weights run on one thread: at 576x192 (110K weights, ~4.5 us) the OpenMP fork and
// join cost more than the second thread saved (2 threads 5.7-6.2 us); at 576x576 (332K) 2 threads win, 9 vs 11 us.
constexpr int64_t kParallelMinWeights = int64_t(1) << 18;

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

// A finished C^T tile (nr output columns x mend rows of x, column r at ctile[r * ld]) -> rows of y, plus bias,
// converted to y's dtype. Shared by the fp32-panel GEMM and the bf16 GEMM.
inline void store_tile(const QLinearArgs& a, const float* ctile, int64_t ld, int64_t m0, int64_t mend, int64_t n0,
                       int64_t nr) {
  const int64_t ysize = tc_dtype_size(a.x_dtype);
  for (int64_t m = 0; m < mend; ++m) {
    void* yrow = static_cast<char*>(a.y) + (m0 + m) * a.y_row_stride * ysize;
    for (int64_t r = 0; r < nr; ++r) {
      const float bias = a.bias ? load_param(a.bias, n0 + r, a.bias_dtype) : 0.0f;
      store_value(yrow, n0 + r, a.x_dtype, ctile[r * ld + m] + bias);
    }
  }
}

// Output rows per GEMM block: at most nc_max, a multiple of the micro-tile's r rows, and at least ~4 blocks per
// thread when N allows it (load balance). Lowers `threads` to the block count.
inline int64_t output_block_rows(int64_t N, int& threads, int64_t r, int64_t nc_max) {
  int64_t nc = (N + 4 * threads - 1) / (4 * threads);
  nc = (nc + r - 1) / r * r;
  if (nc > nc_max) nc = nc_max;
  const int64_t nblocks = (N + nc - 1) / nc;
  if (threads > nblocks) threads = static_cast<int>(nblocks);
  return nc;
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

// ---------------------------------------------------------------------------------------------------------------
// GEMV path.
// ---------------------------------------------------------------------------------------------------------------

// acc[m][k % NACC] += w_k . x[m] over one block, with w_k = u - z (zero vector zv = 2^23 + z) or, with the table
// decoder, w_k = table[u] = (u - z) * s.
template <class V, int BITS, int M, int NACC, bool TABLE>
inline void dot_block(const typename V::TI& v, const float* xp, int64_t xstride, typename V::T zv_or_table,
                      typename V::T (&acc)[M][NACC]) {
  using L = Layout<V, BITS>;
  static_for<L::PER>([&](auto kc) {
    constexpr int k = decltype(kc)::value;
    typename V::T f;
    if constexpr (TABLE) {
      f = V::template table_field<k * BITS>(v, zv_or_table);
    } else {
      f = V::sub(V::template field<k * BITS, BITS>(v), zv_or_table);
    }
    for (int m = 0; m < M; ++m) {
      acc[m][k % NACC] = V::fmadd(f, V::load(xp + m * xstride + k * V::W), acc[m][k % NACC]);
    }
  });
}

// The same with two tables: lanes of the block's first half read t0, of the second half t1 (hi: table2_hi()).
template <class V, int M, int NACC>
inline void dot_block2(const typename V::TI& v, const float* xp, int64_t xstride, const typename V::TI& hi,
                       typename V::T t0, typename V::T t1, typename V::T (&acc)[M][NACC]) {
  static_for<8>([&](auto kc) {
    constexpr int k = decltype(kc)::value;
    const typename V::T f = V::template table2_field<k * 4>(v, hi, t0, t1);
    for (int m = 0; m < M; ++m) {
      acc[m][k % NACC] = V::fmadd(f, V::load(xp + m * xstride + k * V::W), acc[m][k % NACC]);
    }
  });
}

template <class V, int M, int NACC>
inline typename V::T sum_partials(const typename V::T (&a)[M][NACC], int m) {
  typename V::T s = a[m][0];
  for (int j = 1; j < NACC; ++j) s = V::add(s, a[m][j]);
  return s;
}

template <class V, int M, int NACC>
inline void zero_partials(typename V::T (&a)[M][NACC]) {
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < NACC; ++j) a[m][j] = V::zero();
  }
}

// Rows of y per batch (the GEMV path): the batch walks x in chunks that stay in L1, keeping its partial sums in
// a small buffer, so x is read from L1 and only the weights stream from memory (for K = 14336 the permuted x
// row alone is 56 KiB, past L1, and re-reading it from L2 for every row cost up to 40%).
constexpr int64_t kGemvRowBatch = 64;
constexpr int64_t kGemvChunkFloats = 6144;  // 24 KiB of x per chunk (all M rows together)

// Rows [n0, n1) of y: sum over the row's vector blocks and its one-by-one columns, + bias, converted and stored.
template <class V, int BITS, int M, bool TABLE, bool TABLE2 = false>
void gemv_rows(const QLinearArgs& a, const Layout<V, BITS>& lay, const float* xp, int64_t n0, int64_t n1,
               float* sbuf, float* zbuf, typename V::T* accbuf) {
  using T = typename V::T;
  using L = Layout<V, BITS>;
  constexpr int W = V::W;
  // About 8 independent FMA chains hide the FMA latency.
  constexpr int NACC = (8 / M) < 1 ? 1 : ((8 / M) > L::PER ? L::PER : (8 / M));
  const int64_t P = lay.P, row_bytes = a.K * BITS / 8, nvb = lay.blocks();
  const typename V::TI idx = V::expand_index(lay.mode == L::kSplitBlocks ? static_cast<int>(lay.g / L::PER) : 1);
  const int64_t bpg = a.groups == 1 ? nvb : lay.g / L::BC;  // blocks per group in the whole-groups mode
  const int64_t nfull = lay.full_blocks();
  const int tail_lanes = lay.tail_lanes;
  // Symmetric codes: a two-group table is (u - 2^(bits-1)) * s, one multiply of a constant vector (tried in the
  // one-table path too: 4096x4096 g128 ran ~10% slower there, so that one keeps group_table).
  const bool sym = a.zeros == nullptr;
  const T iz = V::sub(V::iota_magic(), V::splat(kMagic + static_cast<float>(1 << (BITS - 1))));
  int64_t chunk = kGemvChunkFloats / (M * L::BC);
  if (chunk < 1) chunk = 1;
  for (int64_t nb0 = n0; nb0 < n1; nb0 += kGemvRowBatch) {
    const int64_t nb1 = (n1 - nb0) < kGemvRowBatch ? n1 : nb0 + kGemvRowBatch;
    for (int64_t i = 0; i < (nb1 - nb0) * M; ++i) accbuf[i] = V::zero();
    for (int64_t cb0 = 0; cb0 < nvb; cb0 += chunk) {
      const int64_t cb1 = (nvb - cb0) < chunk ? nvb : cb0 + chunk;
      const int64_t cg0 = cb0 * L::BC / lay.g;
      const int64_t cg1 = ((cb1 * L::BC < a.K ? cb1 * L::BC : a.K) - 1) / lay.g + 1;
      for (int64_t n = nb0; n < nb1; ++n) {
        const uint8_t* wrow = a.qweight + n * row_bytes;
        // The same blocks of the next row: the order in which the batch reads the weights.
        const uint8_t* wnext = wrow + row_bytes;
        T* acc = accbuf + (n - nb0) * M;
        // The chunk's scales and zero points as fp32, converted once per row and chunk.
        row_params(a, n, cg0, cg1, sbuf, zbuf, W, a.zeros == nullptr);
        if constexpr (TABLE2) {
          // Two groups per block (j = 2b - cg0: c0 / g without a division), each through its own table.
          const typename V::TI hi = V::table2_hi();
          T part[M][NACC];
          zero_partials<V, M, NACC>(part);
          for (int64_t b = cb0; b < cb1; ++b) {
            const int64_t j = 2 * b - cg0;
            const T t0 = sym ? V::mul(iz, V::splat(sbuf[j])) : group_table<V>(sbuf[j], zbuf[j]);
            const T t1 = sym ? V::mul(iz, V::splat(sbuf[j + 1])) : group_table<V>(sbuf[j + 1], zbuf[j + 1]);
            V::prefetch(wnext + b * L::BB);
            dot_block2<V, M, NACC>(load_block<V, BITS>(wrow, b, nfull, tail_lanes), xp + b * L::BC, P, hi, t0, t1, part);
          }
          for (int m = 0; m < M; ++m) acc[m] = V::add(acc[m], sum_partials<V, M, NACC>(part, m));
        } else if constexpr (TABLE) {
          // Dequantized values straight from the table: no per-group scaling left to do.
          T part[M][NACC];
          zero_partials<V, M, NACC>(part);
          // (Group indices advance by counting: a 64-bit division per block cost as much as the block.)
          for (int64_t b = cb0, gi = cg0; b < cb1; ++gi) {
            const int64_t bend = (gi + 1) * bpg < cb1 ? (gi + 1) * bpg : cb1;
            const T table = group_table<V>(sbuf[gi - cg0], zbuf[gi - cg0]);
            for (; b < bend; ++b) {
              V::prefetch(wnext + b * L::BB);
              dot_block<V, BITS, M, NACC, true>(load_block<V, BITS>(wrow, b, nfull, tail_lanes), xp + b * L::BC, P, table, part);
            }
          }
          for (int m = 0; m < M; ++m) acc[m] = V::add(acc[m], sum_partials<V, M, NACC>(part, m));
        } else if (lay.mode == L::kWholeGroups) {
          for (int64_t b = cb0, gi = cg0; b < cb1; ++gi) {
            const int64_t bend = (gi + 1) * bpg < cb1 ? (gi + 1) * bpg : cb1;
            T part[M][NACC];
            zero_partials<V, M, NACC>(part);
            const T zv = V::splat(zbuf[gi - cg0]);
            for (; b < bend; ++b) {
              V::prefetch(wnext + b * L::BB);
              dot_block<V, BITS, M, NACC, false>(load_block<V, BITS>(wrow, b, nfull, tail_lanes), xp + b * L::BC, P, zv, part);
            }
            const T sv = V::splat(sbuf[gi - cg0]);
            for (int m = 0; m < M; ++m) acc[m] = V::fmadd(sv, sum_partials<V, M, NACC>(part, m), acc[m]);
          }
        } else {
          for (int64_t b = cb0; b < cb1; ++b) {
            T part[M][NACC];
            zero_partials<V, M, NACC>(part);
            T sv, zv;
            lane_params<V, BITS>(lay, idx, b * L::BC, cg0, cg1, sbuf, zbuf, sv, zv);
            V::prefetch(wnext + b * L::BB);
            dot_block<V, BITS, M, NACC, false>(load_block<V, BITS>(wrow, b, nfull, tail_lanes), xp + b * L::BC, P, zv, part);
            for (int m = 0; m < M; ++m) acc[m] = V::fmadd(sv, sum_partials<V, M, NACC>(part, m), acc[m]);
          }
        }
      }
    }
    for (int64_t n = nb0; n < nb1; ++n) {
      const uint8_t* wrow = a.qweight + n * row_bytes;
      float tail[M];
      for (int m = 0; m < M; ++m) tail[m] = 0.0f;
      for (int64_t c = lay.kel; c < a.K; ++c) {
        float s, zm;
        group_params(a, n, c / lay.g, s, zm);
        const float w = (static_cast<float>(code_at(wrow, c, BITS)) + kMagic - zm) * s;
        for (int m = 0; m < M; ++m) tail[m] += w * xp[m * P + lay.kvec + (c - lay.kel)];
      }
      const float b = a.bias ? load_param(a.bias, n, a.bias_dtype) : 0.0f;
      const T* acc = accbuf + (n - nb0) * M;
      for (int m = 0; m < M; ++m) {
        store_value(static_cast<char*>(a.y) + m * a.y_row_stride * tc_dtype_size(a.x_dtype), n, a.x_dtype,
                    V::hsum(acc[m]) + tail[m] + b);
      }
    }
  }
}

template <class V, int BITS, int M>
int gemv(const QLinearArgs& a, const Layout<V, BITS>& lay, const float* xp) {
  int threads = a.num_threads;
  if (a.N * a.K < kParallelMinWeights) threads = 1;
  if (threads > a.N) threads = static_cast<int>(a.N);
  int status = TC_OK;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    // Contiguous row ranges: each thread streams one region of the weights.
    const int64_t n0 = a.N * t / nt, n1 = a.N * (t + 1) / nt;
    const int64_t params = 2 * (a.groups + V::W);
    float* buf = static_cast<float*>(aligned_floats(params + kGemvRowBatch * M * V::W));
    if (buf == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    } else {
      float* sbuf = buf + kGemvRowBatch * M * V::W;  // after the (aligned) partial sums
      float* zbuf = sbuf + a.groups + V::W;
      auto* accbuf = reinterpret_cast<typename V::T*>(buf);
      if (a.zeros == nullptr) {  // symmetric: the zero points are the same everywhere (see row_params)
        const float zsym = kMagic + static_cast<float>(1 << (BITS - 1));
        for (int64_t j = 0; j < a.groups + V::W; ++j) zbuf[j] = zsym;
      }
      if (lay.table) {
        gemv_rows<V, BITS, M, true>(a, lay, xp, n0, n1, sbuf, zbuf, accbuf);
      } else if (lay.table2) {
        gemv_rows<V, BITS, M, false, true>(a, lay, xp, n0, n1, sbuf, zbuf, accbuf);
      } else {
        gemv_rows<V, BITS, M, false>(a, lay, xp, n0, n1, sbuf, zbuf, accbuf);
      }
    }
    free(buf);
  }
  return status;
}

template <class V, int BITS>
int run_gemv(const QLinearArgs& a) {
  const Layout<V, BITS> lay(a.K, a.group_size, a.groups);
  float* xp = static_cast<float*>(aligned_floats(a.M * lay.P));
  if (xp == nullptr) return TC_ERR_OUT_OF_MEMORY;
  const int xsize = tc_dtype_size(a.x_dtype);
  for (int64_t m = 0; m < a.M; ++m) {
    permute_row<V, BITS>(static_cast<const char*>(a.x) + m * a.x_row_stride * xsize, a.x_dtype, lay, xp + m * lay.P);
  }
  int status = TC_ERR_BAD_SIZE;
  switch (a.M) {
    case 1: status = gemv<V, BITS, 1>(a, lay, xp); break;
    case 2: status = gemv<V, BITS, 2>(a, lay, xp); break;
    case 3: status = gemv<V, BITS, 3>(a, lay, xp); break;
    case 4: status = gemv<V, BITS, 4>(a, lay, xp); break;
    case 5: status = gemv<V, BITS, 5>(a, lay, xp); break;
    case 6: status = gemv<V, BITS, 6>(a, lay, xp); break;
    case 7: status = gemv<V, BITS, 7>(a, lay, xp); break;
    case 8: status = gemv<V, BITS, 8>(a, lay, xp); break;
    default: break;
  }
  free(xp);
  return status;
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM path.
// ---------------------------------------------------------------------------------------------------------------

template <class V>
struct Blocking {
  static constexpr int R = V::NREG >= 32 ? 14 : (V::W > 1 ? 6 : 4);  // output rows per micro-tile
  static constexpr int U = V::W > 1 ? 2 : 4;                          // vectors of x rows per micro-tile
  static constexpr int MB = U * V::W;                                 // x rows per micro-tile
  static constexpr int KC = 256;                                      // columns per panel (a multiple of every BC)
  static constexpr int NC = R * 8;                                    // output rows per panel
  static constexpr int MC = 256;                                      // x rows per C tile (a multiple of MB)
};

// C^T[r][0 .. MB) (+)= sum_k wp[r * KC + k] * xt[k * MB + 0 .. MB) for r < RR.
template <class V, int RR>
void micro_tile(const float* wp, const float* xt, int64_t kcl, float* c, int64_t cstride, bool accumulate) {
  using T = typename V::T;
  using B = Blocking<V>;
  constexpr int U = B::U, W = V::W;
  T acc[RR][U];
  for (int r = 0; r < RR; ++r) {
    for (int u = 0; u < U; ++u) acc[r][u] = accumulate ? V::load(c + r * cstride + u * W) : V::zero();
  }
  for (int64_t k = 0; k < kcl; ++k) {
    T xv[U];
    for (int u = 0; u < U; ++u) xv[u] = V::load(xt + k * B::MB + u * W);
    for (int r = 0; r < RR; ++r) {
      const T b = V::splat(wp[r * B::KC + k]);
      for (int u = 0; u < U; ++u) acc[r][u] = V::fmadd(b, xv[u], acc[r][u]);
    }
  }
  for (int r = 0; r < RR; ++r) {
    for (int u = 0; u < U; ++u) V::store(c + r * cstride + u * W, acc[r][u]);
  }
}

template <class V, int RR = Blocking<V>::R>
void micro_tile_rows(int rows, const float* wp, const float* xt, int64_t kcl, float* c, int64_t cstride,
                     bool accumulate) {
  if constexpr (RR >= 1) {
    if (rows == RR) return micro_tile<V, RR>(wp, xt, kcl, c, cstride, accumulate);
    return micro_tile_rows<V, RR - 1>(rows, wp, xt, kcl, c, cstride, accumulate);
  }
}

// What a weight panel of permuted positions [p0, p0 + pl) covers: vector blocks up to position vend (there,
// positions == columns), then one-by-one columns from kel on; and the groups [g0, g1) of those columns.
struct PanelSpan {
  int64_t vend, g0, g1;
  template <class V, int BITS>
  PanelSpan(const QLinearArgs& a, const Layout<V, BITS>& lay, int64_t p0, int64_t pl) {
    vend = lay.kvec < p0 + pl ? lay.kvec : p0 + pl;
    const int64_t c_last =
        p0 + pl > lay.kvec ? lay.kel + (p0 + pl - lay.kvec) - 1 : (vend < a.K ? vend : a.K) - 1;
    const int64_t c_first = p0 < lay.kvec ? p0 : lay.kel + (p0 - lay.kvec);
    g0 = c_first / lay.g;
    g1 = c_last / lay.g + 1;
  }
};

// panel[r][0 .. pl) = dequantized weights of row n0 + r at permuted positions [p0, p0 + pl), r < nr.
template <class V, int BITS>
void dequant_panel(const QLinearArgs& a, const Layout<V, BITS>& lay, const typename V::TI& idx, int64_t n0,
                   int64_t nr, int64_t p0, int64_t pl, float* panel, float* sbuf, float* zbuf) {
  using T = typename V::T;
  using L = Layout<V, BITS>;
  using B = Blocking<V>;
  const int64_t row_bytes = a.K * BITS / 8;
  const PanelSpan span(a, lay, p0, pl);
  const int64_t vend = span.vend, g0 = span.g0, g1 = span.g1;
  const int64_t nfull = lay.full_blocks();
  const int tail_lanes = lay.tail_lanes;
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    const uint8_t* wrow = a.qweight + n * row_bytes;
    float* prow = panel + r * B::KC;
    row_params(a, n, g0, g1, sbuf, zbuf, V::W);
    int64_t table_group = -1;
    T table = V::zero();
    for (int64_t c0 = p0; c0 < vend; c0 += L::BC) {
      const typename V::TI v = load_block<V, BITS>(wrow, c0 / L::BC, nfull, tail_lanes);
      float* out = prow + (c0 - p0);
      if (lay.table) {
        const int64_t j = c0 / lay.g - g0;
        if (j != table_group) {
          table = group_table<V>(sbuf[j], zbuf[j]);
          table_group = j;
        }
        static_for<L::PER>([&](auto kc) {
          constexpr int k = decltype(kc)::value;
          V::store(out + k * V::W, V::template table_field<k * BITS>(v, table));
        });
        continue;
      }
      T sv, zv;
      if (lay.mode == L::kWholeGroups) {
        const int64_t j = c0 / lay.g - g0;
        sv = V::splat(sbuf[j]);
        zv = V::splat(zbuf[j]);
      } else {
        lane_params<V, BITS>(lay, idx, c0, g0, g1, sbuf, zbuf, sv, zv);
      }
      static_for<L::PER>([&](auto kc) {
        constexpr int k = decltype(kc)::value;
        V::store(out + k * V::W, V::mul(V::sub(V::template field<k * BITS, BITS>(v), zv), sv));
      });
    }
    for (int64_t q = vend > p0 ? vend : p0; q < p0 + pl; ++q) {
      const int64_t c = lay.kel + (q - lay.kvec);
      const int64_t j = c / lay.g - g0;
      prow[q - p0] = (static_cast<float>(code_at(wrow, c, BITS)) + kMagic - zbuf[j]) * sbuf[j];
    }
  }
}

template <class V, int BITS>
int run_gemm(const QLinearArgs& a) {
  using B = Blocking<V>;
  using L = Layout<V, BITS>;
  const Layout<V, BITS> lay(a.K, a.group_size, a.groups);
  const int64_t P = lay.P, M = a.M, N = a.N;
  const int64_t mblocks = (M + B::MB - 1) / B::MB;
  const int xsize = tc_dtype_size(a.x_dtype);
  // x^T, position-major within blocks of MB rows (zero rows pad the last block).
  float* xt = static_cast<float*>(aligned_floats(mblocks * B::MB * P));
  if (xt == nullptr) return TC_ERR_OUT_OF_MEMORY;
  int threads = a.num_threads;
  if (threads > mblocks) threads = static_cast<int>(mblocks);
  int status = TC_OK;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* row = static_cast<float*>(aligned_floats(P));
    if (row == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
#pragma omp for schedule(static)
    for (int64_t mb = 0; mb < mblocks; ++mb) {
      if (row == nullptr) continue;
      float* dst = xt + mb * B::MB * P;
      for (int j = 0; j < B::MB; ++j) {
        const int64_t m = mb * B::MB + j;
        if (m < M) {
          permute_row<V, BITS>(static_cast<const char*>(a.x) + m * a.x_row_stride * xsize, a.x_dtype, lay, row);
          for (int64_t k = 0; k < P; ++k) dst[k * B::MB + j] = row[k];
        } else {
          for (int64_t k = 0; k < P; ++k) dst[k * B::MB + j] = 0.0f;
        }
      }
    }
    free(row);
  }
  if (status != TC_OK) {
    free(xt);
    return status;
  }

  threads = a.num_threads;
  const int64_t nc = output_block_rows(N, threads, B::R, B::NC);
  const int64_t nblocks = (N + nc - 1) / nc;
  const int64_t mc_max = (mblocks * B::MB) < B::MC ? mblocks * B::MB : B::MC;
  const typename V::TI idx = V::expand_index(lay.mode == L::kSplitBlocks ? static_cast<int>(lay.g / L::PER) : 1);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t groups_per_panel = B::KC / lay.g + 2;  // groups a panel of KC positions can touch
    float* panel = static_cast<float*>(aligned_floats(nc * B::KC));
    float* ctile = static_cast<float*>(aligned_floats(nc * mc_max));
    float* sbuf = static_cast<float*>(aligned_floats(2 * (groups_per_panel + V::W)));
    if (panel == nullptr || ctile == nullptr || sbuf == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
    float* zbuf = sbuf ? sbuf + groups_per_panel + V::W : nullptr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t nb = 0; nb < nblocks; ++nb) {
      if (panel == nullptr || ctile == nullptr || sbuf == nullptr) continue;
      const int64_t n0 = nb * nc, nr = (N - n0) < nc ? (N - n0) : nc;
      for (int64_t mc0 = 0; mc0 < mblocks * B::MB; mc0 += mc_max) {
        const int64_t mcl = (mblocks * B::MB - mc0) < mc_max ? (mblocks * B::MB - mc0) : mc_max;
        for (int64_t p0 = 0; p0 < P; p0 += B::KC) {
          const int64_t pl = (P - p0) < B::KC ? (P - p0) : B::KC;
          dequant_panel<V, BITS>(a, lay, idx, n0, nr, p0, pl, panel, sbuf, zbuf);
          for (int64_t r0 = 0; r0 < nr; r0 += B::R) {
            const int rows = static_cast<int>((nr - r0) < B::R ? (nr - r0) : B::R);
            for (int64_t m0 = 0; m0 < mcl; m0 += B::MB) {
              const float* xtile = xt + (mc0 + m0) * P + p0 * B::MB;
              micro_tile_rows<V>(rows, panel + r0 * B::KC, xtile, pl, ctile + r0 * mc_max + m0, mc_max, p0 > 0);
            }
          }
        }
        store_tile(a, ctile, mc_max, mc0, (M - mc0) < mcl ? (M - mc0) : mcl, n0, nr);
      }
    }
    free(panel);
    free(ctile);
    free(sbuf);
  }
  free(xt);
  return status;
}

#ifndef TC_QLINEAR_NO_KERNEL_TABLE  // (qlinear_avx512_bf16.cpp uses the helpers above, not the table)
template <int BITS>
int run_bits(const QLinearArgs& a) {
  if (a.M <= TC_QLINEAR_GEMV_MAX_M) return run_gemv<QVec, BITS>(a);
  return run_gemm<QVec, BITS>(a);
}

int qlinear(const QLinearArgs& a) { return a.bits == 4 ? run_bits<4>(a) : run_bits<8>(a); }
#endif

}  // namespace

#ifndef TC_QLINEAR_NO_KERNEL_TABLE
const QLinearKernels qlinear_kernels = {&qlinear};
#endif

}  // namespace TC_ISA_NS
}  // namespace tcompress
