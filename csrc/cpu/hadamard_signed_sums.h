// The k x k part of the Hadamard transform with shared signed sums, for k a multiple of 4.
//
// Y[c] = sum_a hk[a, c] Z[a] with hk entries +-1. Split the inputs into groups of four, g = 0 .. k/4 - 1.
// Within a group, hk[4g + j, c] = h0 * s_j with s_0 = 1, so the group adds h0 * (Z0 + s1 Z1 + s2 Z2 + s3 Z3):
// one of only 16 signed combinations (8, and their negatives), whatever c is. Computing them once per column
// block (22 additions for all k outputs) leaves k/4 additions per output instead of k multiply-adds.
// Every output adds exactly k/4 combinations, so the loops have one trip count the branch predictor learns
// (a first version that split each output's groups into added and subtracted lists of varying lengths was
// slower than the dense multiply-adds at k = 12).
//
// Included by hadamard_kernel.h inside tcompress::<isa>::(anonymous); uses its load/store helpers.
#pragma once

#include <stdint.h>
#include <stdlib.h>

#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

// For each output c and group g, the combination slot g * 16 + m it adds: m's bit j-1 (j = 1, 2, 3) is set
// when hk[4g + j, c] != hk[4g, c], and bit 3 when hk[4g, c] is -1 (the negated combination).
struct SignedSums {
  int64_t groups = 0;        // k / 4
  int32_t* slots = nullptr;  // k x groups
};

// Smallest k for which the signed sums beat the dense multiply-adds. The combinations cost 4 vector stores per
// output vector whatever k is, so they pay only once k multiply-adds cost more: measured on AVX-512 (4096 rows)
// k = 12 was 1.2-1.5x slower, k = 28 even, k = 36 1.2x and k = 172 1.4x faster than dense.
constexpr int64_t kSignedSumsMinK = 36;

inline bool use_signed_sums(int64_t k) { return k >= kSignedSumsMinK && k % 4 == 0; }

// Builds the slot table from hk (k x k, row-major (a, c), entries +-1). Returns TC_OK or TC_ERR_OUT_OF_MEMORY.
inline int build_signed_sums(const float* hk, int64_t k, SignedSums* out) {
  const int64_t groups = k / 4;
  out->groups = groups;
  out->slots = static_cast<int32_t*>(malloc(static_cast<size_t>(k * groups) * sizeof(int32_t)));
  if (out->slots == nullptr) return TC_ERR_OUT_OF_MEMORY;
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t g = 0; g < groups; ++g) {
      const float h0 = hk[(4 * g) * k + c];
      int m = h0 > 0 ? 0 : 8;
      for (int j = 1; j < 4; ++j) m |= (hk[(4 * g + j) * k + c] != h0) << (j - 1);
      out->slots[c * groups + g] = static_cast<int32_t>(g * 16 + m);
    }
  }
  return TC_OK;
}

inline void free_signed_sums(SignedSums* s) {
  free(s->slots);
  s->slots = nullptr;
}

// Columns per block (U vectors): up to 4, as long as the 16 k/4 combinations of a block stay within 32 KB (L1).
template <class V>
int signed_sums_width(int64_t k, int64_t p) {
  const int64_t nv = p / V::W;
  int u = 4;
  while (u > 1 && (u > nv || (k / 4) * 16 * u * V::W * 4 > 32 * 1024)) u /= 2;
  return u;
}

// Floats of per-thread scratch that k_part_signed needs for its combinations.
template <class V>
int64_t signed_sums_scratch_floats(int64_t k, int64_t p) {
  return (k / 4) * 16 * signed_sums_width<V>(k, p) * V::W;
}

// Y[c, b0 .. b0 + U W) for every c: z is the k x p scratch row, combos (k/4) * 16 * U * W floats.
template <class V, int DT, int U>
void k_part_signed(const float* z, void* out_row, const SignedSums& ss, float* combos, int64_t k, int64_t p,
                   float scale) {
  using T = typename V::T;
  constexpr int W = V::W;
  constexpr int UW = U * W;
  const T vscale = V::splat(scale);
  for (int64_t b0 = 0; b0 < p; b0 += UW) {
    for (int64_t g = 0; g < ss.groups; ++g) {
      for (int u = 0; u < U; ++u) {
        const float* zg = z + 4 * g * p + b0 + u * W;
        const T z0 = V::load(zg), z1 = V::load(zg + p), z2 = V::load(zg + 2 * p), z3 = V::load(zg + 3 * p);
        const T a0 = V::add(z0, z1), a1 = V::sub(z0, z1);
        const T b[4] = {V::add(a0, z2), V::add(a1, z2), V::sub(a0, z2), V::sub(a1, z2)};
        float* cg = combos + g * 16 * UW + u * W;
        for (int m = 0; m < 4; ++m) {
          const T plus = V::add(b[m], z3), minus = V::sub(b[m], z3);  // bit 2 clear / set
          V::store(cg + m * UW, plus);
          V::store(cg + (m + 4) * UW, minus);
          V::store(cg + (m + 8) * UW, V::sub(V::zero(), plus));  // bit 3: the negated combinations
          V::store(cg + (m + 12) * UW, V::sub(V::zero(), minus));
        }
      }
    }
    for (int64_t c = 0; c < k; ++c) {
      const int32_t* slots = ss.slots + c * ss.groups;
      // Two accumulators per column: independent addition chains hide the add latency.
      T acc0[U], acc1[U];
      for (int u = 0; u < U; ++u) acc0[u] = acc1[u] = V::zero();
      int64_t i = 0;
      for (; i + 1 < ss.groups; i += 2) {
        const float* s0 = combos + static_cast<int64_t>(slots[i]) * UW;
        const float* s1 = combos + static_cast<int64_t>(slots[i + 1]) * UW;
        for (int u = 0; u < U; ++u) {
          acc0[u] = V::add(acc0[u], V::load(s0 + u * W));
          acc1[u] = V::add(acc1[u], V::load(s1 + u * W));
        }
      }
      if (i < ss.groups) {
        const float* s0 = combos + static_cast<int64_t>(slots[i]) * UW;
        for (int u = 0; u < U; ++u) acc0[u] = V::add(acc0[u], V::load(s0 + u * W));
      }
      for (int u = 0; u < U; ++u) {
        store_elems<V, DT>(out_row, c * p + b0 + u * W, V::mul(V::add(acc0[u], acc1[u]), vscale));
      }
    }
  }
}

template <class V, int DT>
void k_part_signed_dispatch(const float* z, void* out_row, const SignedSums& ss, float* combos, int64_t k, int64_t p,
                            float scale) {
  switch (signed_sums_width<V>(k, p)) {
    case 4: k_part_signed<V, DT, 4>(z, out_row, ss, combos, k, p, scale); break;
    case 2: k_part_signed<V, DT, 2>(z, out_row, ss, combos, k, p, scale); break;
    default: k_part_signed<V, DT, 1>(z, out_row, ss, combos, k, p, scale); break;
  }
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
