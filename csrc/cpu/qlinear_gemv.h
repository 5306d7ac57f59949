// The qlinear GEMV path (M <= TC_QLINEAR_GEMV_MAX_M): threads split the output rows; each weight row is streamed
// once and dotted with all M rows of x at once, decoded as qlinear_decode.h describes.
#pragma once

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "qlinear_decode.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

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
  if (a.N * a.K < kQLinearParallelMinWeights) threads = 1;
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

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
