// The linear_block kernels, y = x + b + ((x - mu) U) V (see tcompress/linear_block.h), written once over the
// vector type LBVec (a simd_*.h vector plus load_i8) and included by each ISA translation unit after it defines
// TC_ISA_NS and LBVec; it defines tcompress::<isa>::linear_block (kernel_table.h).
//
// Two paths:
// - GEMV (M <= TC_LINEAR_BLOCK_GEMV_MAX_M, decoding): memory-bound, so U and V are each streamed exactly once and
//   widened (bf16/fp16/int8 -> fp32) in registers, front to back (whole rows, four at a time: sequential reads
//   that the prefetchers follow). Phase 1 splits the d rows of U over the threads (each keeps a partial t of
//   M x r floats in L1), the partials are summed, phase 2 splits the columns of V over the threads and writes
//   y = x + b + t V for its columns straight away.
// - GEMM (prefill): U and V are widened once per call into fp32 panels padded to whole vectors (scales folded in),
//   then each thread takes blocks of kBlockRows rows and runs two register-blocked GEMMs, the block's r-wide
//   intermediate staying in a per-thread buffer that fits in L2.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS and LBVec before including linear_block_kernel.h"
#endif

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "elem_io.h"
#include "kernel_table.h"
#include "tcompress/linear_block.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

using LV = LBVec;
using VT = typename LV::T;
constexpr int kW = LV::W;
// GEMV: rows of x in groups of up to 4 (4 x 4 broadcasts, 4 factor vectors and one sum in registers).
constexpr int kGemvRows = 4;
// GEMM micro-tile: kMR rows x kNV vectors of accumulators (AVX-512: 6 x 4 = 24 of 32 registers; AVX2 and the
// scalar build: 4 x 3 = 12 of 16), plus the kNV factor vectors and one broadcast.
constexpr int kMR = LV::NREG >= 32 ? 6 : 4;
constexpr int kNV = LV::NREG >= 32 ? 4 : 3;
constexpr int64_t kBlockRows = 8 * kMR;  // rows per GEMM task (48 or 32)
constexpr int64_t kDepth = 256;          // k-block of both GEMMs: a kDepth x kNV*kW factor panel stays in L1/L2
// Below this many multiply-adds the GEMV runs on one thread: starting the team costs more than it saves.
constexpr int64_t kGemvWorkPerThread = int64_t(1) << 17;

// 64-byte aligned fp32 scratch, freed on scope exit. An empty buffer still holds one cache line.
struct FloatScratch {
  float* p;
  explicit FloatScratch(int64_t n) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
    p = static_cast<float*>(aligned_alloc(64, bytes));
  }
  ~FloatScratch() { free(p); }
  FloatScratch(const FloatScratch&) = delete;
  FloatScratch& operator=(const FloatScratch&) = delete;
};

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// One element of any tc_dtype (or int8 code) as fp32.
inline float elem_to_float(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case TC_FLOAT32: return static_cast<const float*>(p)[i];
    case TC_FLOAT16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case TC_BFLOAT16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<float>(static_cast<const int8_t*>(p)[i]);
  }
}

inline void float_to_elem(void* p, int dtype, int64_t i, float v) {
  switch (dtype) {
    case TC_FLOAT32: static_cast<float*>(p)[i] = v; break;
    case TC_FLOAT16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    default: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
  }
}

// kW factor elements starting at element i, widened to fp32.
template <int FT>
inline VT load_factor(const void* p, int64_t i) {
  if constexpr (FT == TC_LINEAR_BLOCK_INT8) {
    return LV::load_i8(static_cast<const int8_t*>(p) + i);
  } else {
    return load_elems<LV, FT>(p, i);
  }
}

template <int XDT>
void x_minus_mu_row(const void* xrow, const float* mu, float* out, int64_t d) {
  int64_t j = 0;
  for (; j + kW <= d; j += kW) LV::store(out + j, LV::sub(load_elems<LV, XDT>(xrow, j), LV::load(mu + j)));
  for (; j < d; ++j) out[j] = elem_to_float(xrow, XDT, j) - mu[j];
}

// out[m, :] = x[m, :] - mu for one row, x in any float dtype.
void x_minus_mu(const void* xrow, int x_dtype, const float* mu, float* out, int64_t d) {
  switch (x_dtype) {
    case TC_FLOAT32: x_minus_mu_row<TC_FLOAT32>(xrow, mu, out, d); break;
    case TC_FLOAT16: x_minus_mu_row<TC_FLOAT16>(xrow, mu, out, d); break;
    default: x_minus_mu_row<TC_BFLOAT16>(xrow, mu, out, d); break;
  }
}

template <int XDT>
void epilogue_row(const void* xrow, const float* acc, const float* b, void* yrow, int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + kW <= j1; j += kW) {
    const VT v = LV::add(LV::add(load_elems<LV, XDT>(xrow, j), LV::load(b + j)), LV::load(acc + j - j0));
    store_elems<LV, XDT>(yrow, j, v);
  }
  for (; j < j1; ++j) float_to_elem(yrow, XDT, j, elem_to_float(xrow, XDT, j) + b[j] + acc[j - j0]);
}

// y[j0:j1] = x[j0:j1] + b[j0:j1] + acc[0:j1-j0] for one row; x and y in x_dtype.
void epilogue(const void* xrow, int x_dtype, const float* acc, const float* b, void* yrow, int64_t j0, int64_t j1) {
  switch (x_dtype) {
    case TC_FLOAT32: epilogue_row<TC_FLOAT32>(xrow, acc, b, yrow, j0, j1); break;
    case TC_FLOAT16: epilogue_row<TC_FLOAT16>(xrow, acc, b, yrow, j0, j1); break;
    default: epilogue_row<TC_BFLOAT16>(xrow, acc, b, yrow, j0, j1); break;
  }
}

const void* row_ptr(const void* base, int dtype, int64_t row, int64_t stride) {
  return static_cast<const char*>(base) + row * stride * tc_dtype_size(dtype);
}
void* row_ptr(void* base, int dtype, int64_t row, int64_t stride) {
  return static_cast<char*>(base) + row * stride * tc_dtype_size(dtype);
}

// ---------------------------------------------------------------------------------------------------------------
// GEMV path.
// ---------------------------------------------------------------------------------------------------------------

// out[m, 0:n] += sum_{k0 <= k < k1} a[m, k] * F[k, c0 : c0 + n] for MG rows; F row-major with ldf columns and
// f_numel elements in all; out rows ldo >= round_up(n, kW) floats apart. Factor rows are streamed front to back,
// four at a time (one load and store of the sums per four multiply-adds). The last partial vector of a row is
// read as a whole vector (its extra lanes land in out's padding) unless that would read past F's end.
template <int FT, int MG>
void axpy_rows(const float* a, int64_t lda, const void* f, int64_t ldf, int64_t f_numel, int64_t k0, int64_t k1,
               int64_t c0, int64_t n, float* out, int64_t ldo) {
  const int64_t n_pad = round_up(n, kW);
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    VT s[MG][4];
    for (int m = 0; m < MG; ++m)
      for (int q = 0; q < 4; ++q) s[m][q] = LV::splat(a[m * lda + k + q]);
    const int64_t base = k * ldf + c0;
    const int64_t n_vec = base + 3 * ldf + n_pad <= f_numel ? n_pad : n / kW * kW;
    int64_t j = 0;
    for (; j < n_vec; j += kW) {
      const VT f0 = load_factor<FT>(f, base + j), f1 = load_factor<FT>(f, base + ldf + j);
      const VT f2 = load_factor<FT>(f, base + 2 * ldf + j), f3 = load_factor<FT>(f, base + 3 * ldf + j);
      for (int m = 0; m < MG; ++m) {
        VT acc = LV::load(out + m * ldo + j);
        acc = LV::fmadd(s[m][0], f0, acc);
        acc = LV::fmadd(s[m][1], f1, acc);
        acc = LV::fmadd(s[m][2], f2, acc);
        acc = LV::fmadd(s[m][3], f3, acc);
        LV::store(out + m * ldo + j, acc);
      }
    }
    for (; j < n; ++j) {
      const float f0 = elem_to_float(f, FT, base + j), f1 = elem_to_float(f, FT, base + ldf + j);
      const float f2 = elem_to_float(f, FT, base + 2 * ldf + j), f3 = elem_to_float(f, FT, base + 3 * ldf + j);
      for (int m = 0; m < MG; ++m) {
        const float* am = a + m * lda + k;
        out[m * ldo + j] += am[0] * f0 + am[1] * f1 + am[2] * f2 + am[3] * f3;
      }
    }
  }
  for (; k < k1; ++k) {  // the last rows of the range, one at a time
    VT s[MG];
    for (int m = 0; m < MG; ++m) s[m] = LV::splat(a[m * lda + k]);
    const int64_t base = k * ldf + c0;
    const int64_t n_vec = base + n_pad <= f_numel ? n_pad : n / kW * kW;
    int64_t j = 0;
    for (; j < n_vec; j += kW) {
      const VT f0 = load_factor<FT>(f, base + j);
      for (int m = 0; m < MG; ++m) LV::store(out + m * ldo + j, LV::fmadd(s[m], f0, LV::load(out + m * ldo + j)));
    }
    for (; j < n; ++j) {
      const float f0 = elem_to_float(f, FT, base + j);
      for (int m = 0; m < MG; ++m) out[m * ldo + j] += a[m * lda + k] * f0;
    }
  }
}

template <int FT>
void axpy_rows_group(int mg, const float* a, int64_t lda, const void* f, int64_t ldf, int64_t f_numel, int64_t k0,
                     int64_t k1, int64_t c0, int64_t n, float* out, int64_t ldo) {
  switch (mg) {
    case 1: axpy_rows<FT, 1>(a, lda, f, ldf, f_numel, k0, k1, c0, n, out, ldo); break;
    case 2: axpy_rows<FT, 2>(a, lda, f, ldf, f_numel, k0, k1, c0, n, out, ldo); break;
    case 3: axpy_rows<FT, 3>(a, lda, f, ldf, f_numel, k0, k1, c0, n, out, ldo); break;
    default: axpy_rows<FT, 4>(a, lda, f, ldf, f_numel, k0, k1, c0, n, out, ldo); break;
  }
}

template <int FT>
int run_gemv(const LinearBlockArgs& a, const float* b, const float* mu) {
  const int64_t M = a.M, d = a.d, r = a.r;
  const int64_t work = 2 * M * d * r;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(a.num_threads, work / kGemvWorkPerThread)));
  const int64_t rp = round_up(r, kW), dp = round_up(d, kW);
  // Phase-2 column ranges: whole vectors per thread, the last one ending at d.
  const int64_t d_vecs = dp / kW;
  FloatScratch xc(M * d), t(M * r), partial(static_cast<int64_t>(threads) * M * rp);
  FloatScratch yacc(M * (dp + static_cast<int64_t>(threads) * kW));
  if (xc.p == nullptr || t.p == nullptr || partial.p == nullptr || yacc.p == nullptr) return TC_ERR_OUT_OF_MEMORY;
  for (int64_t m = 0; m < M; ++m)
    x_minus_mu(row_ptr(a.x, a.x_dtype, m, a.x_row_stride), a.x_dtype, mu, xc.p + m * d, d);

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    // Phase 1: this thread's rows of U, all r columns -> its partial t (M x r, rows rp apart).
    const int64_t k0 = d * tid / nt, k1 = d * (tid + 1) / nt;
    float* mine = partial.p + static_cast<int64_t>(tid) * M * rp;
    memset(mine, 0, static_cast<size_t>(M * rp) * sizeof(float));
    for (int64_t m0 = 0; m0 < M; m0 += kGemvRows) {
      const int mg = static_cast<int>(std::min<int64_t>(kGemvRows, M - m0));
      axpy_rows_group<FT>(mg, xc.p + m0 * d, d, a.U, r, d * r, k0, k1, 0, r, mine + m0 * rp, rp);
    }
#pragma omp barrier
    // Sum the partials (and apply u_scale) over this thread's share of t.
    const int64_t e0 = M * r * tid / nt, e1 = M * r * (tid + 1) / nt;
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t m = e / r, i = e % r;
      float s = 0.0f;
      for (int p = 0; p < nt; ++p) s += partial.p[(static_cast<int64_t>(p) * M + m) * rp + i];
      t.p[e] = a.u_scale != nullptr ? s * a.u_scale[i] : s;
    }
#pragma omp barrier
    // Phase 2: this thread's columns of V, all r rows, then y = x + b + acc for those columns.
    const int64_t c0 = d_vecs * tid / nt * kW, c1 = std::min(d, d_vecs * (tid + 1) / nt * kW);
    if (c1 > c0) {
      const int64_t n = c1 - c0, ldo = round_up(n, kW);
      float* acc = yacc.p + M * (c0 + static_cast<int64_t>(tid) * kW);  // M rows of ldo floats, own region
      memset(acc, 0, static_cast<size_t>(M * ldo) * sizeof(float));
      for (int64_t m0 = 0; m0 < M; m0 += kGemvRows) {
        const int mg = static_cast<int>(std::min<int64_t>(kGemvRows, M - m0));
        axpy_rows_group<FT>(mg, t.p + m0 * r, r, a.V, d, r * d, 0, r, c0, n, acc + m0 * ldo, ldo);
      }
      for (int64_t m = 0; m < M; ++m) {
        float* row = acc + m * ldo;
        if (a.v_scale != nullptr)
          for (int64_t j = c0; j < c1; ++j) row[j - c0] *= a.v_scale[j];
        epilogue(row_ptr(a.x, a.x_dtype, m, a.x_row_stride), a.x_dtype, row, b,
                 row_ptr(a.y, a.x_dtype, m, a.y_row_stride), c0, c1);
      }
    }
  }
  return TC_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM path.
// ---------------------------------------------------------------------------------------------------------------

// Rows [r0, r1) of a (rows x cols) factor -> fp32 rows of ldp columns: times col_scale (if any), zero padding.
template <int FT>
void widen_rows(const void* f, int64_t cols, const float* col_scale, float* out, int64_t ldp, int64_t r0, int64_t r1) {
  const int64_t cols_vec = cols / kW * kW;
  for (int64_t i = r0; i < r1; ++i) {
    float* o = out + i * ldp;
    int64_t j = 0;
    for (; j < cols_vec; j += kW) {
      VT v = load_factor<FT>(f, i * cols + j);
      if (col_scale != nullptr) v = LV::mul(v, LV::load(col_scale + j));
      LV::store(o + j, v);
    }
    for (; j < cols; ++j) o[j] = elem_to_float(f, FT, i * cols + j) * (col_scale != nullptr ? col_scale[j] : 1.0f);
    for (; j < ldp; ++j) o[j] = 0.0f;
  }
}

// C (kMR x NV vectors, ldc) (+)= A (kMR x kc, lda) * B (kc x NV vectors, ldb); all fp32.
template <int NV, bool ACCUMULATE>
void micro_tile(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t kc) {
  VT c[kMR][NV];
  for (int m = 0; m < kMR; ++m)
    for (int v = 0; v < NV; ++v) c[m][v] = ACCUMULATE ? LV::load(C + m * ldc + v * kW) : LV::zero();
  for (int64_t k = 0; k < kc; ++k) {
    VT bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = LV::load(B + k * ldb + v * kW);
    for (int m = 0; m < kMR; ++m) {
      const VT s = LV::splat(A[m * lda + k]);
      for (int v = 0; v < NV; ++v) c[m][v] = LV::fmadd(s, bv[v], c[m][v]);
    }
  }
  for (int m = 0; m < kMR; ++m)
    for (int v = 0; v < NV; ++v) LV::store(C + m * ldc + v * kW, c[m][v]);
}

template <int NV>
void micro_tile_acc(bool accumulate, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                    int64_t kc) {
  if (accumulate) {
    micro_tile<NV, true>(A, lda, B, ldb, C, ldc, kc);
  } else {
    micro_tile<NV, false>(A, lda, B, ldb, C, ldc, kc);
  }
}

// C (rows x n, ldc; rows a multiple of kMR, n a multiple of kW) = A (rows x depth, lda) * B (depth x n, ldb).
void gemm_block(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t rows,
                int64_t n, int64_t depth) {
  for (int64_t k0 = 0; k0 < depth; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, depth - k0);
    const bool accumulate = k0 > 0;
    for (int64_t j0 = 0; j0 < n; j0 += kNV * kW) {
      const int nv = static_cast<int>(std::min<int64_t>(kNV, (n - j0) / kW));
      for (int64_t i0 = 0; i0 < rows; i0 += kMR) {
        const float* a = A + i0 * lda + k0;
        const float* bp = B + k0 * ldb + j0;
        float* c = C + i0 * ldc + j0;
        switch (nv) {
          case 1: micro_tile_acc<1>(accumulate, a, lda, bp, ldb, c, ldc, kc); break;
          case 2: micro_tile_acc<2>(accumulate, a, lda, bp, ldb, c, ldc, kc); break;
          case 3: micro_tile_acc<3>(accumulate, a, lda, bp, ldb, c, ldc, kc); break;
          default: micro_tile_acc<kNV>(accumulate, a, lda, bp, ldb, c, ldc, kc); break;
        }
      }
    }
  }
}

template <int FT>
int run_gemm(const LinearBlockArgs& a, const float* b, const float* mu) {
  const int64_t M = a.M, d = a.d, r = a.r;
  const int64_t rp = round_up(r, kW), dp = round_up(d, kW);
  FloatScratch up(d * rp), vp(r * dp);
  if (up.p == nullptr || vp.p == nullptr) return TC_ERR_OUT_OF_MEMORY;
  const int64_t blocks = (M + kBlockRows - 1) / kBlockRows;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(a.num_threads, blocks)));
  int status = TC_OK;

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    widen_rows<FT>(a.U, r, a.u_scale, up.p, rp, d * tid / nt, d * (tid + 1) / nt);
    widen_rows<FT>(a.V, d, a.v_scale, vp.p, dp, r * tid / nt, r * (tid + 1) / nt);
    const int64_t rows_p = round_up(kBlockRows, kMR);
    FloatScratch xc(rows_p * d), t(rows_p * rp), acc(rows_p * dp);
    const bool ok = xc.p != nullptr && t.p != nullptr && acc.p != nullptr;
    if (!ok) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      if (!ok) continue;
      const int64_t m0 = blk * kBlockRows, mb = std::min(kBlockRows, M - m0), mbp = round_up(mb, kMR);
      for (int64_t i = 0; i < mb; ++i)
        x_minus_mu(row_ptr(a.x, a.x_dtype, m0 + i, a.x_row_stride), a.x_dtype, mu, xc.p + i * d, d);
      memset(xc.p + mb * d, 0, static_cast<size_t>((mbp - mb) * d) * sizeof(float));  // padding rows: zeros
      gemm_block(xc.p, d, up.p, rp, t.p, rp, mbp, rp, d);      // t = (x - mu) U
      gemm_block(t.p, rp, vp.p, dp, acc.p, dp, mbp, dp, r);   // acc = t V (only t's r real columns)
      for (int64_t i = 0; i < mb; ++i)
        epilogue(row_ptr(a.x, a.x_dtype, m0 + i, a.x_row_stride), a.x_dtype, acc.p + i * dp, b,
                 row_ptr(a.y, a.x_dtype, m0 + i, a.y_row_stride), 0, d);
    }
  }
  return status;
}

template <int FT>
int run_factor(const LinearBlockArgs& a) {
  FloatScratch b(a.d), mu(a.d);
  if (b.p == nullptr || mu.p == nullptr) return TC_ERR_OUT_OF_MEMORY;
  for (int64_t j = 0; j < a.d; ++j) {
    b.p[j] = elem_to_float(a.b, a.b_dtype, j);
    mu.p[j] = elem_to_float(a.mu, a.mu_dtype, j);
  }
  if (a.M <= TC_LINEAR_BLOCK_GEMV_MAX_M) return run_gemv<FT>(a, b.p, mu.p);
  return run_gemm<FT>(a, b.p, mu.p);
}

}  // namespace

// The entry point of this ISA (declared in kernel_table.h; dispatch.cpp puts it in the KernelTable).
int linear_block(const LinearBlockArgs& a) {
  switch (a.factor_dtype) {
    case TC_FLOAT32: return run_factor<TC_FLOAT32>(a);
    case TC_FLOAT16: return run_factor<TC_FLOAT16>(a);
    case TC_BFLOAT16: return run_factor<TC_BFLOAT16>(a);
    case TC_LINEAR_BLOCK_INT8: return run_factor<TC_LINEAR_BLOCK_INT8>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

}  // namespace TC_ISA_NS
}  // namespace tcompress
