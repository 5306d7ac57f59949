// The CPU quant kernels (quantize, int4 pack / unpack, dequantize), written once over a vector type and compiled
// once per ISA.
//
// Each quant_<isa>.cpp defines TC_ISA_NS and TC_QVEC (its vector type: simd_<isa>.h plus quant_simd_<isa>.h)
// and includes this file, which defines tcompress::<isa>::quantize, pack_int4, unpack_int4 and dequantize
// (kernel_table.h). Everything else has internal linkage.
//
// Exactness: every variant does the same IEEE fp32 operations in the same order as the pure-torch reference
// (python/tcompress/ops/quantize.py): max / min reductions (exact in any order), one division for the scale,
// the scale rounded to its storage dtype (round to nearest even), then per element one division w / s, a
// round-half-even, an addition of an integer and a clamp. Tails shorter than a vector take the one-lane type,
// which performs the very same operations, so results do not depend on the ISA or on where a vector starts.
// Rows are split across OpenMP threads.
#pragma once

#include <float.h>
#include <omp.h>
#include <stdint.h>

#include "elem_io.h"
#include "kernel_table.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

// Below this many elements per call, thread start-up costs more than the work.
constexpr int64_t kQuantParallelMinElements = int64_t(1) << 16;

int thread_count(int requested, int64_t rows, int64_t elements) {
  int threads = requested > 0 ? requested : omp_get_max_threads();
  if (elements < kQuantParallelMinElements) threads = 1;
  if (threads > rows) threads = static_cast<int>(rows);
  return threads < 1 ? 1 : threads;
}

// ---------------------------------------------------------------------------------------------------------------
// Scales in their storage dtype.
// ---------------------------------------------------------------------------------------------------------------

template <int SDT>
inline float round_to_storage(float s) {
  if constexpr (SDT == TC_FLOAT16) return f16_to_float(float_to_f16(s));
  if constexpr (SDT == TC_BFLOAT16) return bf16_to_float(float_to_bf16(s));
  return s;
}

template <int SDT>
inline void store_scale(void* scales, int64_t i, float s) {
  if constexpr (SDT == TC_FLOAT32) static_cast<float*>(scales)[i] = s;
  if constexpr (SDT == TC_FLOAT16) static_cast<uint16_t*>(scales)[i] = float_to_f16(s);
  if constexpr (SDT == TC_BFLOAT16) static_cast<uint16_t*>(scales)[i] = float_to_bf16(s);
}

template <int SDT>
inline float load_scale(const void* scales, int64_t i) {
  if constexpr (SDT == TC_FLOAT16) return f16_to_float(static_cast<const uint16_t*>(scales)[i]);
  if constexpr (SDT == TC_BFLOAT16) return bf16_to_float(static_cast<const uint16_t*>(scales)[i]);
  return static_cast<const float*>(scales)[i];
}

// ---------------------------------------------------------------------------------------------------------------
// Quantize.
// ---------------------------------------------------------------------------------------------------------------

// One group of `len` elements of w starting at column c0 -> its codes, scale and zero point. Returns a tc_status.
template <class V, int WDT, int SDT, bool SYM>
int quantize_group(const void* w_row, int64_t c0, int64_t len, int bits, uint8_t* codes_row, void* scales,
                   uint8_t* zeros, int64_t group_index) {
  using T = typename V::T;
  using S = QVecScalar;
  constexpr int W = V::W;
  const int64_t end = c0 + len;

  // Pass 1: absmax (symmetric) or min and max (asymmetric), and whether every element is finite.
  T vlo = V::splat(0.0f), vhi = V::splat(0.0f);
  typename V::M vfinite = V::all_true();
  bool finite = true;
  float lo = 0.0f, hi = 0.0f;
  int64_t i = c0;
  if (len >= W) {
    vlo = vhi = SYM ? V::abs(load_elems<V, WDT>(w_row, c0)) : load_elems<V, WDT>(w_row, c0);
    for (; i + W <= end; i += W) {
      const T x = load_elems<V, WDT>(w_row, i);
      vfinite = V::and_finite(vfinite, x);
      if constexpr (SYM) {
        vhi = V::max(vhi, V::abs(x));
      } else {
        vlo = V::min(vlo, x);
        vhi = V::max(vhi, x);
      }
    }
    finite = V::all(vfinite);
    hi = V::hmax(vhi);
    lo = SYM ? 0.0f : V::hmin(vlo);
  } else {
    const float x0 = load_elems<S, WDT>(w_row, c0);
    lo = hi = SYM ? S::abs(x0) : x0;
  }
  for (; i < end; ++i) {
    const float x = load_elems<S, WDT>(w_row, i);
    finite = S::and_finite(finite, x);
    if constexpr (SYM) {
      hi = S::max(hi, S::abs(x));
    } else {
      lo = S::min(lo, x);
      hi = S::max(hi, x);
    }
  }
  if (!finite) return TC_ERR_NOT_FINITE;

  // The scale, rounded to its storage dtype; the zero point.
  float s, zero;
  float qlo, qhi;  // the clamp range of round(w / s) (+ zero)
  if constexpr (SYM) {
    const int qmax = (1 << (bits - 1)) - 1;
    s = hi / static_cast<float>(qmax);
    qlo = static_cast<float>(-qmax - 1);
    qhi = static_cast<float>(qmax);
    zero = static_cast<float>(1 << (bits - 1));  // added after the clamp
  } else {
    const int qmax = (1 << bits) - 1;
    lo = S::min(lo, 0.0f);
    hi = S::max(hi, 0.0f);
    s = (hi - lo) / static_cast<float>(qmax);
    qlo = 0.0f;
    qhi = static_cast<float>(qmax);
    zero = 0.0f;  // set below, once s is final
  }
  s = round_to_storage<SDT>(s);
  if (!(s <= FLT_MAX)) return TC_ERR_NOT_FINITE;  // overflowed its dtype (or fp32 itself, for hi - lo)
  if (s == 0.0f) s = 1.0f;
  store_scale<SDT>(scales, group_index, s);
  if constexpr (!SYM) {
    zero = S::min(S::max(S::round_even(-lo / s), qlo), qhi);
    zeros[group_index] = static_cast<uint8_t>(static_cast<int>(zero));
  }

  // Pass 2: the codes.
  const T vs = V::splat(s), vzero = V::splat(zero), vqlo = V::splat(qlo), vqhi = V::splat(qhi);
  i = c0;
  for (; i + W <= end; i += W) {
    const T q = V::round_even(V::div(load_elems<V, WDT>(w_row, i), vs));
    const T u = SYM ? V::add(V::min(V::max(q, vqlo), vqhi), vzero) : V::min(V::max(V::add(q, vzero), vqlo), vqhi);
    V::store_codes(codes_row + i, u);
  }
  for (; i < end; ++i) {
    const float q = S::round_even(S::div(load_elems<S, WDT>(w_row, i), s));
    const float u = SYM ? S::min(S::max(q, qlo), qhi) + zero : S::min(S::max(q + zero, qlo), qhi);
    S::store_codes(codes_row + i, u);
  }
  return TC_OK;
}

template <class V, int WDT, int SDT, bool SYM>
int quantize_rows(const QuantizeArgs& a) {
  const int esize = tc_dtype_size(WDT);
  const int64_t groups = a.n / a.group;
  const int threads = thread_count(a.num_threads, a.rows, a.rows * a.n);
  int status = TC_OK;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < a.rows; ++r) {
    int row_status;
#pragma omp atomic read
    row_status = status;
    if (row_status != TC_OK) continue;  // an earlier row failed: the outputs are forfeit anyway
    const char* w_row = static_cast<const char*>(a.w) + r * a.w_row_stride * esize;
    uint8_t* codes_row = a.codes + r * a.n;
    for (int64_t gi = 0; gi < groups && row_status == TC_OK; ++gi) {
      row_status = quantize_group<V, WDT, SDT, SYM>(w_row, gi * a.group, a.group, a.bits, codes_row, a.scales,
                                                    a.zeros, r * groups + gi);
    }
    if (row_status != TC_OK) {
#pragma omp atomic write
      status = row_status;
    }
  }
  return status;
}

template <int WDT, int SDT, bool SYM>
int quantize_dispatch_vec(const QuantizeArgs& a) {
  // Groups shorter than a vector take the one-lane path throughout.
  if (a.group >= TC_QVEC::W) return quantize_rows<TC_QVEC, WDT, SDT, SYM>(a);
  return quantize_rows<QVecScalar, WDT, SDT, SYM>(a);
}

template <int WDT, int SDT>
int quantize_dispatch_sym(const QuantizeArgs& a) {
  return a.symmetric ? quantize_dispatch_vec<WDT, SDT, true>(a) : quantize_dispatch_vec<WDT, SDT, false>(a);
}

template <int WDT>
int quantize_dispatch_scale(const QuantizeArgs& a) {
  switch (a.scale_dtype) {
    case TC_FLOAT32: return quantize_dispatch_sym<WDT, TC_FLOAT32>(a);
    case TC_FLOAT16: return quantize_dispatch_sym<WDT, TC_FLOAT16>(a);
    case TC_BFLOAT16: return quantize_dispatch_sym<WDT, TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dequantize.
// ---------------------------------------------------------------------------------------------------------------

// Packed int4 codes into a 16-bit dtype: a code takes only 16 values, so each group's 16 results are computed once
// (with the very operations of the direct path, hence bit-identical) and the group becomes table lookups.
constexpr int64_t kLutMinGroup = 32;

template <class V, int ODT>
void build_lut16(uint16_t* lut, float s, float z) {
  alignas(64) static const float kCodes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int k = 0; k < 16; k += V::W) {
    store_elems<V, ODT>(lut, k, V::mul(V::sub(V::load(kCodes + k), V::splat(z)), V::splat(s)));
  }
}

template <class V, int SDT, int ODT, bool PACKED>
void dequantize_row(const DequantizeArgs& a, int64_t r, int64_t groups, float implicit_zero) {
  using T = typename V::T;
  using S = QVecScalar;
  constexpr int W = V::W;
  const uint8_t* codes_row = a.codes + r * a.codes_row_stride;
  void* out_row = static_cast<char*>(a.out) + r * a.out_row_stride * tc_dtype_size(ODT);
  for (int64_t gi = 0; gi < groups; ++gi) {
    const float s = load_scale<SDT>(a.scales, r * groups + gi);
    const float z = a.zeros ? static_cast<float>(a.zeros[r * groups + gi]) : implicit_zero;
    const int64_t end = (gi + 1) * a.group;
    int64_t i = gi * a.group;
    if constexpr (PACKED && ODT != TC_FLOAT32) {
      if (a.group >= kLutMinGroup) {
        alignas(64) uint16_t lut[16];
        build_lut16<V, ODT>(lut, s, z);
        uint16_t* out16 = static_cast<uint16_t*>(out_row);
        if (i & 1) {  // an odd group length: start the lookups on a whole byte
          out16[i] = lut[int4_at(codes_row, i)];
          ++i;
        }
        const int64_t blocks = (end - i) / 32 * 32;
        V::lookup_int4_u16(codes_row + i / 2, out16 + i, blocks, lut);
        for (i += blocks; i < end; ++i) out16[i] = lut[int4_at(codes_row, i)];
        continue;
      }
    }
    if constexpr (W > 1) {
      const T vs = V::splat(s), vz = V::splat(z);
      if (PACKED && (i & 1) && i < end) {  // an odd group length: start the vectors on a whole byte
        store_elems<S, ODT>(out_row, i, S::mul(S::sub(static_cast<float>(int4_at(codes_row, i)), z), s));
        ++i;
      }
      for (; i + W <= end; i += W) {
        const T u = PACKED ? V::load_codes_int4(codes_row + i / 2) : V::load_codes(codes_row + i);
        store_elems<V, ODT>(out_row, i, V::mul(V::sub(u, vz), vs));
      }
    }
    for (; i < end; ++i) {
      const float u = PACKED ? static_cast<float>(int4_at(codes_row, i)) : static_cast<float>(codes_row[i]);
      store_elems<S, ODT>(out_row, i, S::mul(S::sub(u, z), s));
    }
  }
}

template <int SDT, int ODT, bool PACKED>
int dequantize_rows(const DequantizeArgs& a) {
  const int64_t groups = a.n / a.group;
  const float implicit_zero = static_cast<float>(1 << (a.bits - 1));
  const int threads = thread_count(a.num_threads, a.rows, a.rows * a.n);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < a.rows; ++r) {
    if (a.group >= TC_QVEC::W) {
      dequantize_row<TC_QVEC, SDT, ODT, PACKED>(a, r, groups, implicit_zero);
    } else {
      dequantize_row<QVecScalar, SDT, ODT, PACKED>(a, r, groups, implicit_zero);
    }
  }
  return TC_OK;
}

template <int SDT, int ODT>
int dequantize_dispatch_format(const DequantizeArgs& a) {
  return a.packed ? dequantize_rows<SDT, ODT, true>(a) : dequantize_rows<SDT, ODT, false>(a);
}

template <int SDT>
int dequantize_dispatch_out(const DequantizeArgs& a) {
  switch (a.out_dtype) {
    case TC_FLOAT32: return dequantize_dispatch_format<SDT, TC_FLOAT32>(a);
    case TC_FLOAT16: return dequantize_dispatch_format<SDT, TC_FLOAT16>(a);
    case TC_BFLOAT16: return dequantize_dispatch_format<SDT, TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// The entry points of this ISA (declared in kernel_table.h; dispatch.cpp puts them in the KernelTable).
// ---------------------------------------------------------------------------------------------------------------

int quantize(const QuantizeArgs& a) {
  switch (a.w_dtype) {
    case TC_FLOAT32: return quantize_dispatch_scale<TC_FLOAT32>(a);
    case TC_FLOAT16: return quantize_dispatch_scale<TC_FLOAT16>(a);
    case TC_BFLOAT16: return quantize_dispatch_scale<TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

int pack_int4(const PackArgs& a) {
  const int threads = thread_count(a.num_threads, a.rows, a.rows * a.n);
  uint8_t seen = 0;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(| : seen)
  for (int64_t r = 0; r < a.rows; ++r) {
    seen |= TC_QVEC::pack_row(a.codes + r * a.codes_row_stride, a.packed + r * a.packed_row_stride, a.n);
  }
  return (seen & 0xF0) ? TC_ERR_BAD_ARGUMENT : TC_OK;
}

int unpack_int4(const PackArgs& a) {
  const int threads = thread_count(a.num_threads, a.rows, a.rows * a.n);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < a.rows; ++r) {
    TC_QVEC::unpack_row(a.packed + r * a.packed_row_stride, a.codes + r * a.codes_row_stride, a.n);
  }
  return TC_OK;
}

int dequantize(const DequantizeArgs& a) {
  switch (a.scale_dtype) {
    case TC_FLOAT32: return dequantize_dispatch_out<TC_FLOAT32>(a);
    case TC_FLOAT16: return dequantize_dispatch_out<TC_FLOAT16>(a);
    case TC_BFLOAT16: return dequantize_dispatch_out<TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

}  // namespace TC_ISA_NS
}  // namespace tcompress
