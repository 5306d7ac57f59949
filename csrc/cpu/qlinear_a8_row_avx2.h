// The AVX2 row kernel of the qlinear_a8 GEMV (see qlinear_a8_kernel.h, "A8Tile interface", gemv_row): one weight row
// against up to 4 rows of int8 activation codes, integer dot products per group, exact int32 group results scaled
// in fp32. Included by the avx2 and the avx512_vnni translation units (the latter has no VNNI row kernel of its own:
// on the AVX2 one the row is memory-bound at 2 threads already, see bench/README.md).
//
// int4: a 32-byte load holds 64 columns; its low nibbles are the even columns and its high nibbles the odd ones,
// which the driver lays out as [32 even | 32 odd] activation codes per 64 columns, so both halves meet their
// activations at unit stride: vpmaddubsw (u4 x s8 pairs, |sum| <= 2 * 15 * 127, no saturation) twice, one int16 add
// (<= 7,620), vpmaddwd by ones into 8 int32 lanes of 8 columns each. Groups of 32 are lanes 0-3 / 4-7 of a block.
// int8: codes u are flipped to signed u - 128 (xor 0x80); vpmaddubsw takes |u - 128| and the activations carrying
// the sign of u - 128 (vpsignb), pair sums <= 2 * 128 * 127 = 32,512: no saturation, no nibble split.
#pragma once

#include <immintrin.h>
#include <stdint.h>

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct A8RowAvx2 {
  // out[m] = sum over groups g of s[g] * xs[m, g] * (sum_k (u_k - off) * act_m,k - corr[m * corr_stride + g]),
  // off = 0 (int4) or 128 (int8), xs[m, g] = xs[m * corr_stride + g] with PG and 1 without; act in the GEMV layout
  // (int4: [even | odd] per 64 columns; int8: plain), rows act_stride apart.
  template <int M, bool INT4, bool PG>
  static void gemv_row(const uint8_t* w, const int8_t* act, int64_t act_stride, int64_t K, int64_t group_size,
                       const float* s, const int32_t* corr, int64_t corr_stride, const float* xs, float* out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 f[M];
    for (int m = 0; m < M; ++m) f[m] = _mm256_setzero_ps();
    if constexpr (INT4) {
      const __m256i nibble = _mm256_set1_epi8(0x0F);
      const int64_t blocks = K / 64;
      if (group_size == 32 || group_size == 64) {
        // One block = two groups of 32 (lanes 0-3 and 4-7) or one group of 64: scaled per block.
        const bool two = group_size == 32;
        const __m256i halves = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        for (int64_t b = 0; b < blocks; ++b) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * b));
          const __m256i lo = _mm256_and_si256(v, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
          const __m256 sv = two ? pair(s + 2 * b, halves) : _mm256_broadcast_ss(s + b);
          for (int m = 0; m < M; ++m) {
            const int8_t* am = act + m * act_stride + 64 * b;
            const __m256i p = _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am))),
                _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am + 32))));
            const int32_t* c = corr + m * corr_stride + (two ? 2 * b : b);
            const __m256i cv = two ? _mm256_setr_epi32(c[0], 0, 0, 0, c[1], 0, 0, 0) : _mm256_setr_epi32(c[0], 0, 0, 0, 0, 0, 0, 0);
            const __m256i d = _mm256_sub_epi32(_mm256_madd_epi16(p, ones), cv);
            __m256 svm = sv;
            if constexpr (PG) {
              const float* x = xs + m * corr_stride + (two ? 2 * b : b);
              svm = _mm256_mul_ps(sv, two ? pair(x, halves) : _mm256_broadcast_ss(x));
            }
            f[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), svm, f[m]);
          }
        }
      } else {
        // Whole groups of 64 * bpg columns: int32 sums over the group, one conversion and scaling per group.
        const int64_t bpg = group_size / 64, groups = K / group_size;
        for (int64_t g = 0; g < groups; ++g) {
          __m256i acc[M];
          for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_si256();
          for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * b));
            const __m256i lo = _mm256_and_si256(v, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
            for (int m = 0; m < M; ++m) {
              const int8_t* am = act + m * act_stride + 64 * b;
              const __m256i p = _mm256_add_epi16(
                  _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am))),
                  _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am + 32))));
              acc[m] = _mm256_add_epi32(acc[m], _mm256_madd_epi16(p, ones));
            }
          }
          finish_group<M, PG>(acc, g, s, corr, corr_stride, xs, f);
        }
      }
    } else {
      const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
      const int64_t bpg = group_size / 32, groups = K / group_size;
      for (int64_t g = 0; g < groups; ++g) {
        __m256i acc[M];
        for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_si256();
        for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
          const __m256i v = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * b)), flip);
          const __m256i magnitude = _mm256_abs_epi8(v);
          for (int m = 0; m < M; ++m) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act + m * act_stride + 32 * b));
            acc[m] = _mm256_add_epi32(acc[m], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, v)), ones));
          }
        }
        finish_group<M, PG>(acc, g, s, corr, corr_stride, xs, f);
      }
    }
    for (int m = 0; m < M; ++m) {
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(f[m]), _mm256_extractf128_ps(f[m], 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      out[m] = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    }
  }

 private:
  // [p[0] x 4, p[1] x 4]: the scales of two groups of 32 columns, lanes 0-3 and 4-7 of a block.
  static __m256 pair(const float* p, __m256i halves) {
    // (A 64-bit integer load: reading floats through a double* would break strict aliasing.)
    const __m128 two = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), halves);
  }

  // f[m] += s[g] (* xs[m, g]) * (acc[m] - corr) with the correction on lane 0 (exact in int32 before the conversion).
  template <int M, bool PG>
  static void finish_group(const __m256i (&acc)[M], int64_t g, const float* s, const int32_t* corr,
                           int64_t corr_stride, const float* xs, __m256 (&f)[M]) {
    for (int m = 0; m < M; ++m) {
      const __m256 sv = _mm256_set1_ps(PG ? s[g] * xs[m * corr_stride + g] : s[g]);
      const __m256i d = _mm256_sub_epi32(acc[m], _mm256_setr_epi32(corr[m * corr_stride + g], 0, 0, 0, 0, 0, 0, 0));
      f[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sv, f[m]);
    }
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
