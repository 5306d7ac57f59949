// The qlinear GEMM path (M > TC_QLINEAR_GEMV_MAX_M) for bf16 x on CPUs with AVX512_BF16: vdpbf16ps instead of
// fp32 FMAs. Compiled with the AVX-512 flags plus -mavx512bf16, so called only after tc_cpu_features_get()
// reports avx512_bf16 (see dispatch.cpp).
//
// Numerics: nothing is rounded that the fp32 path does not round. x is bf16 already, and the weights go into the
// panels as u - z, which bf16 holds exactly (|u - z| <= 255 needs 8 significant bits, bf16 has 8); the scale is
// not folded into the panel (s * (u - z) rounded to bf16 would lose up to 2^-9 relative per weight). Instead each
// group's products are summed in fp32 (vdpbf16ps: exact products, fp32 sums) and folded into the C tile with one
// FMA per group: acc += s * sum_group, as the GEMV path does. That needs each accumulator to see one group at a
// time, i.e. each group in one run of positions, the same in every row: the whole-groups layout (one group per
// row, or groups a multiple of the vector block: int4 g128/g256..., int8 g64/g128/per channel), and int4 groups
// of 64 (two per 128-column block) with the block's positions reordered so that each group's 64 are contiguous
// (split_position; x is reordered the same way). Other group sizes (g32, ...) return kQLinearNotHandled and run
// the fp32 GEMM.
//
// vdpbf16ps flushes bf16 subnormal inputs (and subnormal results) to zero: activations with |x| < 2^-126
// contribute 0 instead of a product below ~1e-38 * 255 * s.
#define TC_ISA_NS avx512bf16

#include "qlinear_vec_avx512.h"

#include "kernel_table.h"
#include "qlinear_gemm.h"
#include "tcompress/qlinear.h"

namespace tcompress {
namespace avx512bf16 {
namespace {

using V = QVec;
constexpr int kR = 14;         // output rows per micro-tile
constexpr int kMB = 32;        // x rows per micro-tile (two vectors)
constexpr int kKC = 256;       // positions per panel (128 pairs; a multiple of every vector block)
constexpr int kKP = kKC / 2;   // pairs per panel row
constexpr int kNC = kR * 8;    // output rows per panel
constexpr int kMC = 256;       // x rows per C tile
constexpr int kMaxSegs = kKC / 64 + 1;  // groups one panel can touch (vector blocks are >= 64 columns)

// C^T[r][0 .. 32) += s[r] * sum over pairs [kp0, kp1) of wp[r][kp] . xt[kp][0 .. 32) (bf16 pairs), r < RR.
template <int RR>
inline void micro_tile(const uint32_t* wp, const uint32_t* xt, int64_t kp0, int64_t kp1, const float* s, float* c,
                       int64_t cstride) {
  __m512 acc[RR][2];
  for (int r = 0; r < RR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t kp = kp0; kp < kp1; ++kp) {
    const __m512bh x0 = (__m512bh)_mm512_load_si512(xt + kp * kMB);
    const __m512bh x1 = (__m512bh)_mm512_load_si512(xt + kp * kMB + 16);
    for (int r = 0; r < RR; ++r) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(wp[r * kKP + kp]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], b, x0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], b, x1);
    }
  }
  for (int r = 0; r < RR; ++r) {
    const __m512 sv = _mm512_set1_ps(s[r]);
    float* cr = c + r * cstride;
    _mm512_store_ps(cr, _mm512_fmadd_ps(sv, acc[r][0], _mm512_load_ps(cr)));
    _mm512_store_ps(cr + 16, _mm512_fmadd_ps(sv, acc[r][1], _mm512_load_ps(cr + 16)));
  }
}

template <int RR = kR>
inline void micro_tile_rows(int rows, const uint32_t* wp, const uint32_t* xt, int64_t kp0, int64_t kp1,
                            const float* s, float* c, int64_t cstride) {
  if constexpr (RR >= 1) {
    if (rows == RR) return micro_tile<RR>(wp, xt, kp0, kp1, s, c, cstride);
    return micro_tile_rows<RR - 1>(rows, wp, xt, kp0, kp1, s, c, cstride);
  }
}

// Split layout (int4, groups of 64): where permuted position p = k*16 + i of a 128-column block goes, so that
// each group's 64 values are contiguous: lanes i < 8 of vectors k into the first half, i >= 8 into the second,
// vectors k and k + 1 side by side (what two _mm512_shuffle_f32x4 do in unscaled_panel).
inline int split_position(int p) {
  const int k = p / 16, i = p % 16;
  return (i / 8) * 64 + (k / 2) * 16 + (k % 2) * 8 + i % 8;
}

inline uint32_t bf16_pair(float lo, float hi) {
  return static_cast<uint32_t>(float_to_bf16(lo)) | (static_cast<uint32_t>(float_to_bf16(hi)) << 16);
}

// panel[r][0 .. ceil(pl / 2)) = bf16 pairs of u - z of row n0 + r at permuted positions [p0, p0 + pl) (a zero
// after an odd last position), r < nr.
template <int BITS>
void unscaled_panel(const QLinearArgs& a, const Layout<V, BITS>& lay, int64_t n0, int64_t nr, int64_t p0,
                    int64_t pl, uint32_t* panel, float* sbuf, float* zbuf) {
  using L = Layout<V, BITS>;
  const int64_t row_bytes = a.K * BITS / 8;
  const PanelSpan span(a, lay, p0, pl);
  const int64_t vend = span.vend, g0 = span.g0, g1 = span.g1;
  const int64_t nfull = lay.full_blocks();
  const int tail_lanes = lay.tail_lanes;
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t n = n0 + r;
    const uint8_t* wrow = a.qweight + n * row_bytes;
    uint32_t* prow = panel + r * kKP;
    row_params(a, n, g0, g1, sbuf, zbuf, V::W);
    for (int64_t c0 = p0; c0 < vend; c0 += L::BC) {
      const typename V::TI v = load_block<V, BITS>(wrow, c0 / L::BC, nfull, tail_lanes);
      if (BITS == 4 && lay.mode == L::kSplitBlocks) {
        // int4, two groups of 64 per block: lanes 0-7 (group A) go to the block's first 64 positions, lanes 8-15
        // (group B) to the last 64 (see split_position).
        const int64_t j = c0 / lay.g - g0;
        const __m512 zv = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(zbuf[j]), _mm512_set1_ps(zbuf[j + 1]));
        uint32_t* out = prow + (c0 - p0) / 2;
        static_for<L::PER / 4>([&](auto kc) {
          constexpr int k = 4 * decltype(kc)::value;
          const __m512 f0 = _mm512_sub_ps(V::template field<k * BITS, BITS>(v), zv);
          const __m512 f1 = _mm512_sub_ps(V::template field<(k + 1) * BITS, BITS>(v), zv);
          const __m512 f2 = _mm512_sub_ps(V::template field<(k + 2) * BITS, BITS>(v), zv);
          const __m512 f3 = _mm512_sub_ps(V::template field<(k + 3) * BITS, BITS>(v), zv);
          const __m512 a01 = _mm512_shuffle_f32x4(f0, f1, 0x44), a23 = _mm512_shuffle_f32x4(f2, f3, 0x44);
          const __m512 b01 = _mm512_shuffle_f32x4(f0, f1, 0xEE), b23 = _mm512_shuffle_f32x4(f2, f3, 0xEE);
          _mm512_storeu_si512(out + k * 4, (__m512i)_mm512_cvtne2ps_pbh(a23, a01));
          _mm512_storeu_si512(out + 32 + k * 4, (__m512i)_mm512_cvtne2ps_pbh(b23, b01));
        });
        continue;
      }
      const __m512 zv = _mm512_set1_ps(zbuf[c0 / lay.g - g0]);
      uint32_t* out = prow + (c0 - p0) / 2;
      static_for<L::PER / 2>([&](auto kc) {
        constexpr int k = 2 * decltype(kc)::value;
        const __m512 f0 = _mm512_sub_ps(V::template field<k * BITS, BITS>(v), zv);
        const __m512 f1 = _mm512_sub_ps(V::template field<(k + 1) * BITS, BITS>(v), zv);
        // (exact: small integers) lanes 0-15 from f0, 16-31 from f1, i.e. positions k*16 .. k*16 + 31 in order.
        _mm512_storeu_si512(out + k * 8, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
      });
    }
    const int64_t q0 = vend > p0 ? vend : p0;
    for (int64_t q = q0; q < p0 + pl; q += 2) {
      float w[2] = {0.0f, 0.0f};
      for (int h = 0; h < 2 && q + h < p0 + pl; ++h) {
        const int64_t c = lay.kel + (q + h - lay.kvec);
        w[h] = static_cast<float>(code_at(wrow, c, BITS)) + kMagic - zbuf[c / lay.g - g0];
      }
      prow[(q - p0) / 2] = bf16_pair(w[0], w[1]);
    }
  }
}

template <int BITS>
int run(const QLinearArgs& a) {
  using L = Layout<V, BITS>;
  const Layout<V, BITS> lay(a.K, a.group_size, a.groups);
  // Layouts whose groups occupy whole runs of positions: whole groups, or int4 groups of 64 (split, reordered).
  const bool split = BITS == 4 && lay.mode == L::kSplitBlocks && lay.groups_per_block == 2;
  if (!(lay.mode == L::kWholeGroups || split)) return kQLinearNotHandled;
  if (lay.mode == L::kWholeGroups && a.groups > 1 && lay.kfull != a.K) return kQLinearNotHandled;
  const int64_t P = lay.P, PP = (P + 1) / 2, M = a.M, N = a.N;  // PP: pairs per x row
  const int64_t mblocks = (M + kMB - 1) / kMB;
  // x^T as bf16 pairs: block of 32 rows, pair-major ([pair][row], one 32-bit word per row and pair).
  auto* xt = static_cast<uint32_t*>(aligned_floats(mblocks * kMB * PP));
  if (xt == nullptr) return TC_ERR_OUT_OF_MEMORY;
  int threads = a.num_threads;
  if (threads > mblocks) threads = static_cast<int>(mblocks);
  int status = TC_OK;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* row = static_cast<float*>(aligned_floats(2 * PP + (split ? L::BC : 0)));
    if (row == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
#pragma omp for schedule(static)
    for (int64_t mb = 0; mb < mblocks; ++mb) {
      if (row == nullptr) continue;
      uint32_t* dst = xt + mb * kMB * PP;
      for (int j = 0; j < kMB; ++j) {
        const int64_t m = mb * kMB + j;
        if (m < M) {
          permute_row<V, BITS>(static_cast<const char*>(a.x) + m * a.x_row_stride * 2, a.x_dtype, lay, row);
          row[2 * PP - 1] = P % 2 ? 0.0f : row[2 * PP - 1];
          if (split) {  // (P == kvec: no one-by-one columns)
            float* blk = row + 2 * PP;
            for (int64_t c0 = 0; c0 < P; c0 += L::BC) {
              for (int p = 0; p < L::BC; ++p) blk[split_position(p)] = row[c0 + p];
              memcpy(row + c0, blk, L::BC * sizeof(float));
            }
          }
          for (int64_t kp = 0; kp < PP; ++kp) dst[kp * kMB + j] = bf16_pair(row[2 * kp], row[2 * kp + 1]);
        } else {
          for (int64_t kp = 0; kp < PP; ++kp) dst[kp * kMB + j] = 0u;
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
  const int64_t nc = output_block_rows(N, threads, kR, kNC);
  const int64_t nblocks = (N + nc - 1) / nc;
  const int64_t mc_max = (mblocks * kMB) < kMC ? mblocks * kMB : kMC;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int64_t groups_per_panel = kKC / lay.g + 2;
    auto* panel = static_cast<uint32_t*>(aligned_floats(nc * kKP));
    float* ctile = static_cast<float*>(aligned_floats(nc * mc_max));
    float* sbuf = static_cast<float*>(aligned_floats(2 * (groups_per_panel + V::W)));
    float* segs = static_cast<float*>(aligned_floats(kMaxSegs * nc));  // scale of segment i, row r: segs[i*nc + r]
    if (panel == nullptr || ctile == nullptr || sbuf == nullptr || segs == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
    float* zbuf = sbuf ? sbuf + groups_per_panel + V::W : nullptr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t nb = 0; nb < nblocks; ++nb) {
      if (panel == nullptr || ctile == nullptr || sbuf == nullptr || segs == nullptr) continue;
      const int64_t n0 = nb * nc, nr = (N - n0) < nc ? (N - n0) : nc;
      for (int64_t mc0 = 0; mc0 < mblocks * kMB; mc0 += mc_max) {
        const int64_t mcl = (mblocks * kMB - mc0) < mc_max ? (mblocks * kMB - mc0) : mc_max;
        memset(ctile, 0, static_cast<size_t>(nc * mc_max) * sizeof(float));
        for (int64_t p0 = 0; p0 < P; p0 += kKC) {
          const int64_t pl = (P - p0) < kKC ? (P - p0) : kKC;
          unscaled_panel<BITS>(a, lay, n0, nr, p0, pl, panel, sbuf, zbuf);
          // Segments of the panel that lie in one group (with several groups, groups start at the positions
          // that are multiples of g: whole groups keep columns at their positions within a group, and the split
          // layout puts group 2b + h at positions [128b + 64h, 128b + 64h + 64); one group: one segment).
          int64_t seg_start[kMaxSegs + 1];
          int nseg = 0;
          for (int64_t q = p0; q < p0 + pl;) {
            const int64_t j = a.groups > 1 ? q / lay.g : 0;
            const int64_t qe = a.groups > 1 && (j + 1) * lay.g < p0 + pl ? (j + 1) * lay.g : p0 + pl;
            // (j == groups: the zero-padded second half of a partial split block)
            for (int64_t r = 0; r < nr; ++r) {
              segs[nseg * nc + r] = j < a.groups ? load_param(a.scales, (n0 + r) * a.groups + j, a.scale_dtype) : 0.0f;
            }
            seg_start[nseg++] = q;
            q = qe;
          }
          seg_start[nseg] = p0 + pl;
          for (int64_t r0 = 0; r0 < nr; r0 += kR) {
            const int rows = static_cast<int>((nr - r0) < kR ? (nr - r0) : kR);
            for (int64_t m0 = 0; m0 < mcl; m0 += kMB) {
              const uint32_t* xtile = xt + (mc0 + m0) * PP + (p0 / 2) * kMB;
              for (int i = 0; i < nseg; ++i) {
                const int64_t kp0 = (seg_start[i] - p0) / 2, kp1 = (seg_start[i + 1] - p0 + 1) / 2;
                micro_tile_rows(rows, panel + r0 * kKP, xtile, kp0, kp1, segs + i * nc + r0,
                                ctile + r0 * mc_max + m0, mc_max);
              }
            }
          }
        }
        store_tile(a, ctile, mc_max, mc0, (M - mc0) < mcl ? (M - mc0) : mcl, n0, nr);
      }
    }
    free(panel);
    free(ctile);
    free(sbuf);
    free(segs);
  }
  free(xt);
  return status;
}

}  // namespace

int qlinear_gemm_bf16(const QLinearArgs& a) {
  if (a.x_dtype != TC_BFLOAT16 || a.M <= TC_QLINEAR_GEMV_MAX_M) return kQLinearNotHandled;
  return a.bits == 4 ? run<4>(a) : run<8>(a);
}

}  // namespace avx512bf16
}  // namespace tcompress
