// The qlinear GEMM path (M > TC_QLINEAR_GEMV_MAX_M): for each block of NC output rows and KC columns, the weights
// are dequantized ((u - z) * s, exactly what the reference computes) into an fp32 panel, and a register-blocked
// micro-kernel computes R output rows x MB rows of x at a time, broadcasting weights and loading x from a
// transposed copy (k-major, MB rows of x per k), accumulating into a per-thread fp32 tile C^T. store_tile and
// output_block_rows also serve the bf16 GEMM (qlinear_avx512_bf16.cpp).
#pragma once

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "qlinear_decode.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

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

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
