// The CPU Hadamard kernel, written once over a vector type and compiled once per ISA.
//
// Each hadamard_<isa>.cpp defines TC_ISA_NS and TC_VEC (its vector type, see simd_*.h) and includes this file,
// which defines tcompress::<isa>::hadamard (kernel_table.h). Everything else here has internal linkage.
//
// Per row of n = k * p elements (p = 2^m), on a per-thread fp32 scratch row that stays in L1/L2:
//   1. load + convert to fp32 + the log2(W) butterfly stages inside each W-lane register -> scratch;
//   2. the remaining log2(p / W) stages of each of the k segments, three at a time (radix-8 passes over
//      registers), then a radix-4 or radix-2 pass for what is left. With k == 1 the last pass multiplies by
//      `scale`, converts and stores straight into the output row;
//   3. with k > 1, the k x k part Y[c, :] = sum_a (scale * hk[a, c]) * Z[a, :]: for k a multiple of 4 (>= 12)
//      with shared signed sums (hadamard_signed_sums.h, k/4 additions per output), otherwise as dense
//      multiply-adds register-blocked over (CB outputs) x (U vectors of columns); written to the output row.
// Rows are split across OpenMP threads; the input is read once and the output written once.
#pragma once

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "elem_io.h"
#include "hadamard_signed_sums.h"
#include "kernel_table.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

// Below this many elements per call, thread start-up costs more than the work.
constexpr int64_t kParallelMinElements = int64_t(1) << 15;

template <class V>
inline void butterfly(typename V::T& a, typename V::T& b) {
  const typename V::T sum = V::add(a, b);
  b = V::sub(a, b);
  a = sum;
}

// One pass of R = 2, 4 or 8 over a segment of `nv` vectors, doing log2(R) stages at vector strides s, 2s, 4s.
// EMIT: instead of writing back to the scratch row, multiply by `scale`, convert and store to the output row.
template <class V, int DT, int R, bool EMIT>
void radix_pass(float* seg, void* out_row, int64_t nv, int64_t s, typename V::T scale) {
  using T = typename V::T;
  constexpr int W = V::W;
  for (int64_t base = 0; base < nv; base += R * s) {
    for (int64_t j = 0; j < s; ++j) {
      const int64_t first = (base + j) * W;
      float* q = seg + first;
      T a[R];
      for (int r = 0; r < R; ++r) a[r] = V::load(q + r * s * W);
      // Stage s pairs (0,1)(2,3)..., stage 2s pairs (0,2)(1,3)..., stage 4s pairs (0,4)(1,5)...
      for (int h = 1; h < R; h *= 2) {
        for (int r = 0; r < R; ++r) {
          if ((r & h) == 0) butterfly<V>(a[r], a[r + h]);
        }
      }
      for (int r = 0; r < R; ++r) {
        if constexpr (EMIT) {
          store_elems<V, DT>(out_row, first + r * s * W, V::mul(a[r], scale));
        } else {
          V::store(q + r * s * W, a[r]);
        }
      }
    }
  }
}

// Stages at vector strides >= 1 of every segment; with emit, the last pass writes the scaled output.
template <class V, int DT>
void inter_vector_stages(float* scratch, void* out_row, int64_t k, int64_t p, float scale, bool emit) {
  using T = typename V::T;
  const int64_t nv = p / V::W;
  int remaining = 0;
  while ((int64_t(1) << remaining) < nv) ++remaining;
  const T vscale = V::splat(scale);
  int64_t s = 1;
  while (remaining > 0) {
    const int radix_log = remaining >= 3 ? 3 : remaining;
    const bool last = remaining == radix_log;
    for (int64_t seg = 0; seg < k; ++seg) {
      float* z = scratch + seg * p;
      if (emit && last) {
        // emit is only asked for k == 1, so the segment is the whole row.
        if (radix_log == 3) radix_pass<V, DT, 8, true>(z, out_row, nv, s, vscale);
        if (radix_log == 2) radix_pass<V, DT, 4, true>(z, out_row, nv, s, vscale);
        if (radix_log == 1) radix_pass<V, DT, 2, true>(z, out_row, nv, s, vscale);
      } else {
        if (radix_log == 3) radix_pass<V, DT, 8, false>(z, out_row, nv, s, vscale);
        if (radix_log == 2) radix_pass<V, DT, 4, false>(z, out_row, nv, s, vscale);
        if (radix_log == 1) radix_pass<V, DT, 2, false>(z, out_row, nv, s, vscale);
      }
    }
    s <<= radix_log;
    remaining -= radix_log;
  }
}

// Y[c, b0 + 0 .. U*W) for c in [0, k): CB outputs at a time, each a sum over k rows of Z.
// hks = scale * hk, row-major (a, c).
template <class V, int DT, int U, int CB>
void k_part(const float* z, void* out_row, const float* hks, int64_t k, int64_t p) {
  using T = typename V::T;
  constexpr int W = V::W;
  for (int64_t b0 = 0; b0 < p; b0 += U * W) {
    for (int64_t c0 = 0; c0 < k; c0 += CB) {
      T acc[CB][U];
      for (int c = 0; c < CB; ++c) {
        for (int u = 0; u < U; ++u) acc[c][u] = V::zero();
      }
      for (int64_t a = 0; a < k; ++a) {
        const float* zr = z + a * p + b0;
        T zv[U];
        for (int u = 0; u < U; ++u) zv[u] = V::load(zr + u * W);
        const float* h = hks + a * k + c0;
        for (int c = 0; c < CB; ++c) {
          const T hc = V::splat(h[c]);
          for (int u = 0; u < U; ++u) acc[c][u] = V::fmadd(hc, zv[u], acc[c][u]);
        }
      }
      for (int c = 0; c < CB; ++c) {
        for (int u = 0; u < U; ++u) store_elems<V, DT>(out_row, (c0 + c) * p + b0 + u * W, acc[c][u]);
      }
    }
  }
}

// Register blocking: as many columns (U vectors) and outputs (CB) as the register file holds.
// Every supported k > 2 is a multiple of 4; k == 2 (and any k not a multiple of 4) takes CB = 1 or 2.
template <class V, int DT>
void k_part_dispatch(const float* z, void* out_row, const float* hks, int64_t k, int64_t p) {
  const int64_t nv = p / V::W;
  if (k % 4 != 0) {
    if (k % 2 == 0) {
      k_part<V, DT, 1, 2>(z, out_row, hks, k, p);
    } else {
      k_part<V, DT, 1, 1>(z, out_row, hks, k, p);
    }
  } else if (V::NREG >= 32 && nv % 4 == 0) {
    k_part<V, DT, 4, 4>(z, out_row, hks, k, p);
  } else if (nv % 2 == 0) {
    if (V::NREG >= 32 && k % 12 == 0) {
      k_part<V, DT, 2, 12>(z, out_row, hks, k, p);
    } else {
      k_part<V, DT, 2, 4>(z, out_row, hks, k, p);
    }
  } else if (k % 12 == 0) {
    k_part<V, DT, 1, 12>(z, out_row, hks, k, p);
  } else {
    k_part<V, DT, 1, 4>(z, out_row, hks, k, p);
  }
}

template <class V, int DT>
void transform_row(const void* x_row, void* out_row, float* scratch, float* combos, const float* hks,
                   const SignedSums& ss, int64_t k, int64_t p, float scale) {
  const int64_t n = k * p;
  for (int64_t i = 0; i < n; i += V::W) V::store(scratch + i, V::intra(load_elems<V, DT>(x_row, i)));
  const bool emit = k == 1;
  inter_vector_stages<V, DT>(scratch, out_row, k, p, scale, emit);
  if (emit && p == V::W) {
    // A single-vector row has no inter-vector pass to fuse the output into.
    store_elems<V, DT>(out_row, 0, V::mul(V::load(scratch), V::splat(scale)));
  }
  if (!emit && use_signed_sums(k)) {
    k_part_signed_dispatch<V, DT>(scratch, out_row, ss, combos, k, p, scale);
  } else if (!emit) {
    k_part_dispatch<V, DT>(scratch, out_row, hks, k, p);
  }
}

template <class V, int DT>
int run_rows(const HadamardArgs& a, const float* hks, const SignedSums& ss) {
  const int esize = tc_dtype_size(DT);
  int threads = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  if (a.rows * a.n < kParallelMinElements) threads = 1;
  if (threads > a.rows) threads = static_cast<int>(a.rows);
  // One segment (p floats) plus a cache line of slack after the row: GCC 12's vectorizer builds a pair
  // z[a*p + b], z[a*p + b + 1] in k_part with movq + movhps, and the movhps half reads the *next* segment's
  // elements (discarded by the following shuffle). On the last segment that read lands up to p floats past
  // the row; it faulted when it crossed into an unmapped page. The slack keeps it inside our allocation.
  const int64_t row_floats = ((a.n + a.p) * 4 + 64 + 63) / 64 * 16;
  // The signed-sums K part keeps its combinations after the row (plus the same slack).
  const int64_t combo_floats = use_signed_sums(a.k) ? signed_sums_scratch_floats<V>(a.k, a.p) + 16 : 0;
  const size_t scratch_bytes = static_cast<size_t>(row_floats + combo_floats) * sizeof(float);
  int status = TC_OK;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* scratch = static_cast<float*>(aligned_alloc(64, scratch_bytes));
    if (scratch == nullptr) {
#pragma omp atomic write
      status = TC_ERR_OUT_OF_MEMORY;
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < a.rows; ++r) {
      if (scratch == nullptr) continue;
      const char* x_row = static_cast<const char*>(a.x) + r * a.x_row_stride * esize;
      char* out_row = static_cast<char*>(a.out) + r * a.out_row_stride * esize;
      transform_row<V, DT>(x_row, out_row, scratch, scratch + row_floats, hks, ss, a.k, a.p, a.scale);
    }
    free(scratch);
  }
  return status;
}

template <int DT>
int run_dtype(const HadamardArgs& a, const float* hks, const SignedSums& ss) {
  // Segments shorter than a vector take the one-lane path.
  if (a.p >= TC_VEC::W) return run_rows<TC_VEC, DT>(a, hks, ss);
  return run_rows<VecScalar, DT>(a, hks, ss);
}

}  // namespace

// The entry point of this ISA (declared in kernel_table.h; dispatch.cpp puts it in the KernelTable).
int hadamard(const HadamardArgs& a) {
  float* hks = nullptr;
  SignedSums ss;
  int status = TC_OK;
  if (a.k > 1) {
    // One spare row plus a vector of slack: the same GCC over-read as for the scratch row (see run_rows) also
    // reads row a + 1 of hks on the last iteration of k_part's loop over a.
    hks = static_cast<float*>(malloc(static_cast<size_t>(a.k * a.k + a.k + 16) * sizeof(float)));
    if (hks == nullptr) return TC_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < a.k * a.k; ++i) hks[i] = a.hk[i] * a.scale;  // +-scale: exact
    if (use_signed_sums(a.k)) status = build_signed_sums(a.hk, a.k, &ss);
  }
  if (status == TC_OK) {
    switch (a.dtype) {
      case TC_FLOAT32: status = run_dtype<TC_FLOAT32>(a, hks, ss); break;
      case TC_FLOAT16: status = run_dtype<TC_FLOAT16>(a, hks, ss); break;
      case TC_BFLOAT16: status = run_dtype<TC_BFLOAT16>(a, hks, ss); break;
      default: status = TC_ERR_BAD_DTYPE; break;
    }
  }
  free_signed_sums(&ss);
  free(hks);
  return status;
}

}  // namespace TC_ISA_NS
}  // namespace tcompress
