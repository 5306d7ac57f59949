// The qlinear_a8 driver, compiled once per ISA translation unit (qlinear_a8_<isa>.cpp defines TC_ISA_NS and a
// micro-kernel `A8Tile` before including this header, which defines tcompress::<isa>::qlinear_a8,
// quantize_activations and qlinear_a8_name; see kernel_table.h):
//
//   1. activations: each row quantized to int8 codes (per-token scale sx, or one per weight group when
//      a.act_per_group: sx[m * groups + g]), stored with every group padded to a
//      multiple of 4 columns, plus the sum of the codes of each (row, group) for the zero-point correction;
//   2. weights: per panel of A8Tile::NR output columns, the codes are unpacked and re-laid out so that the 4
//      codes of one column for 4 consecutive k are adjacent ("k4 blocks": panel[t][column][4]), which is the
//      operand layout of vpdpbusd (and of vpmaddubsw + vpmaddwd); a panel stays in L2 while every row tile runs;
//   3. A8Tile::tile multiplies A8Tile::MR rows of codes (4 bytes broadcast per k4 block) by the panel into int32
//      accumulators per group; the driver subtracts z * sum(codes) (exact), converts to fp32, multiplies by the
//      group scale (times the group's activation scale, per group) and adds into an fp32 tile; at the end
//      y = c * sx + bias (per token) or c + bias (per group).
//
// A8Tile interface:
//   static constexpr const char* kName;                  the kernel's name (tc_qlinear_a8_kernel_name())
//   static constexpr int MR, NR;                         rows and columns of one tile (NR a multiple of 16)
//   template <int R, bool INT4> static void tile(const int8_t* a, int64_t a_stride, const uint8_t* panel,
//                                                int64_t t0, int64_t t1, int32_t* acc);
//     acc[r * NR + j] = sum over k4 blocks t in [t0, t1) and b < 4 of panel[(t * NR + j) * 4 + b] *
//                       a[r * a_stride + 4 * t + b], for r < R (R <= MR); INT4: every weight code is <= 15.
//   template <int M, bool INT4, bool PG> static void gemv_row(const uint8_t* w, const int8_t* act,
//       int64_t act_stride, int64_t K, int64_t group_size, const float* s, const int32_t* corr,
//       int64_t corr_stride, const float* xs, float* out);
//     the decode path (row_gemv below): out[m] = sum_g s[g] * xs_mg * (sum_{k in g} (u_k - off) * act[m, k] -
//     corr[m * corr_stride + g]) for m < M <= 4, off = 0 for int4 and 128 for int8, xs_mg = xs[m * corr_stride + g]
//     with PG (per-group activation scales), 1 without (xs unused); activations in the row layout
//     (int4: per 64 columns the 32 even then the 32 odd codes; int8: plain); int4: K % 64 == 0 and group_size 32
//     or a multiple of 64; int8: K and group_size multiples of 32.
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including qlinear_a8_kernel.h"
#endif

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>

#include "kernel_table.h"
#include "qlinear_args.h"
#include "simd_scalar.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

// 64-byte aligned scratch memory, freed on scope exit.
class Scratch {
 public:
  explicit Scratch(size_t bytes) : p_(aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64)) {}
  ~Scratch() { free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  bool ok() const { return p_ != nullptr; }

 private:
  void* p_;
};

inline float load_float(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case TC_FLOAT16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case TC_BFLOAT16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store_float(void* p, int dtype, int64_t i, float v) {
  switch (dtype) {
    case TC_FLOAT16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    case TC_BFLOAT16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// One row of x (K elements of dtype DT) -> its per-token scale and codes (x / sx, rounded half to even, as
// torch.round does, clamped to [-qmax, qmax]). False when the row holds NaN or Inf.
template <int DT>
bool quantize_row(const void* x, int64_t K, int qmax, float* row_f32, int8_t* codes, float* sx) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    const float v = load_float(x, DT, k);
    row_f32[k] = v;
    finite &= fabsf(v) <= 3.4028234663852886e38f;  // false for NaN too, which std::max would silently drop
    amax = std::max(amax, fabsf(v));
  }
  if (!finite) return false;
  const float scale = amax > 0.0f ? amax / static_cast<float>(qmax) : 1.0f;
  const float lo = -static_cast<float>(qmax), hi = static_cast<float>(qmax);
  for (int64_t k = 0; k < K; ++k) {
    // A division, not a multiplication by 1/scale: the codes must equal the reference's x / scale exactly.
    const float q = nearbyintf(row_f32[k] / scale);
    codes[k] = static_cast<int8_t>(std::min(hi, std::max(lo, q)));
  }
  *sx = scale;
  return true;
}

bool quantize_row_any(int dtype, const void* x, int64_t K, int qmax, float* row_f32, int8_t* codes, float* sx) {
  switch (dtype) {
    case TC_FLOAT16: return quantize_row<TC_FLOAT16>(x, K, qmax, row_f32, codes, sx);
    case TC_BFLOAT16: return quantize_row<TC_BFLOAT16>(x, K, qmax, row_f32, codes, sx);
    default: return quantize_row<TC_FLOAT32>(x, K, qmax, row_f32, codes, sx);
  }
}

// Activation scales per row: 1 (per token) or one per weight group.
inline int64_t act_scales_per_row(const QLinearA8Args& a) { return a.act_per_group ? a.groups : 1; }

// Row m of x -> its K codes and its act_scales_per_row(a) scales (row_f32: K floats of scratch).
bool quantize_activation_row(const QLinearA8Args& a, int64_t m, float* row_f32, int8_t* codes, float* sx) {
  const int qmax = (1 << (a.act_bits - 1)) - 1;
  const int esize = tc_dtype_size(a.x_dtype);
  const char* xr = static_cast<const char*>(a.x) + m * a.x_row_stride * esize;
  if (!a.act_per_group) return quantize_row_any(a.x_dtype, xr, a.K, qmax, row_f32, codes, sx);
  for (int64_t g = 0; g < a.groups; ++g) {
    const int64_t k0 = g * a.group_size;
    if (!quantize_row_any(a.x_dtype, xr + k0 * esize, a.group_size, qmax, row_f32, codes + k0, sx + g)) return false;
  }
  return true;
}

// Geometry shared by the packing and the tiles: groups padded to gp (a multiple of 4) columns.
struct Geometry {
  int64_t gs, groups, gp, kp, k4_per_group;
};

Geometry geometry_of(const QLinearA8Args& a) {
  Geometry g;
  g.gs = a.group_size;
  g.groups = a.groups;
  g.gp = (g.gs + 3) / 4 * 4;
  g.kp = g.groups * g.gp;
  g.k4_per_group = g.gp / 4;
  return g;
}

// Activations in the padded layout (M rows of kp codes) with per-(row, group) code sums; rows quantized from x,
// or copied from the given codes. Scales go to sx, act_scales_per_row(a) per row (quantized rows only).
int prepare_activations(const QLinearA8Args& a, const Geometry& geo, int8_t* padded, int32_t* sums, float* sx) {
  std::atomic<int> status{TC_OK};
  const int threads = static_cast<int>(std::min<int64_t>(a.num_threads, a.M));
#pragma omp parallel num_threads(threads)
  {
    Scratch row_f32(static_cast<size_t>(a.K) * sizeof(float)), row_codes(static_cast<size_t>(a.K));
    if (!row_f32.ok() || !row_codes.ok()) status = TC_ERR_OUT_OF_MEMORY;
#pragma omp for schedule(static)
    for (int64_t m = 0; m < a.M; ++m) {
      if (!row_f32.ok() || !row_codes.ok()) continue;
      const int8_t* codes = a.codes != nullptr ? a.codes + m * a.K : row_codes.as<int8_t>();
      if (a.codes == nullptr &&
          !quantize_activation_row(a, m, row_f32.as<float>(), row_codes.as<int8_t>(), sx + m * act_scales_per_row(a))) {
        status = TC_ERR_NOT_FINITE;
        continue;
      }
      int8_t* dst = padded + m * geo.kp;
      for (int64_t g = 0; g < geo.groups; ++g) {
        const int8_t* src = codes + g * geo.gs;
        int32_t s = 0;
        for (int64_t i = 0; i < geo.gs; ++i) s += src[i];
        sums[m * geo.groups + g] = s;
        memcpy(dst + g * geo.gp, src, static_cast<size_t>(geo.gs));
        memset(dst + g * geo.gp + geo.gs, 0, static_cast<size_t>(geo.gp - geo.gs));
      }
    }
  }
  return status.load();
}

// Weight code (n row given) at column k.
inline uint8_t weight_code(const uint8_t* row, int bits, int64_t k) {
  if (bits == 8) return row[k];
  const uint8_t byte = row[k >> 1];
  return (k & 1) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0x0F);
}

// Panel p (columns p * NR ..) in k4-block layout, with its scales and zero points per group (zeros past N).
template <int NR>
void pack_panel(const QLinearA8Args& a, const Geometry& geo, int64_t p, uint8_t* panel, float* pscale,
                int32_t* pzero) {
  const int64_t row_bytes = a.bits == 4 ? a.K / 2 : a.K;
  const int64_t t_count = geo.kp / 4;
  const int32_t implicit_zero = 1 << (a.bits - 1);
  for (int j = 0; j < NR; ++j) {
    const int64_t n = p * NR + j;
    if (n >= a.N) {
      for (int64_t t = 0; t < t_count; ++t) memset(panel + (t * NR + j) * 4, 0, 4);
      for (int64_t g = 0; g < geo.groups; ++g) {
        pscale[g * NR + j] = 0.0f;
        pzero[g * NR + j] = 0;
      }
      continue;
    }
    const uint8_t* row = a.qweight + n * row_bytes;
    for (int64_t g = 0; g < geo.groups; ++g) {
      pscale[g * NR + j] = a.scales != nullptr ? load_float(a.scales, a.scale_dtype, n * geo.groups + g) : 0.0f;
      pzero[g * NR + j] = a.zeros != nullptr ? a.zeros[n * geo.groups + g] : implicit_zero;
    }
    if (geo.gp == geo.gs && a.bits == 8) {
      for (int64_t t = 0; t < t_count; ++t) memcpy(panel + (t * NR + j) * 4, row + 4 * t, 4);
    } else if (geo.gp == geo.gs) {
      for (int64_t t = 0; t < t_count; ++t) {
        const uint8_t b0 = row[2 * t], b1 = row[2 * t + 1];
        uint8_t* d = panel + (t * NR + j) * 4;
        d[0] = b0 & 0x0F;
        d[1] = b0 >> 4;
        d[2] = b1 & 0x0F;
        d[3] = b1 >> 4;
      }
    } else {
      for (int64_t g = 0; g < geo.groups; ++g) {
        for (int64_t i = 0; i < geo.gp; ++i) {
          const int64_t kk = g * geo.gp + i;
          panel[((kk >> 2) * NR + j) * 4 + (kk & 3)] = i < geo.gs ? weight_code(row, a.bits, g * geo.gs + i) : 0;
        }
      }
    }
  }
}

template <int R, bool INT4>
void tile_rows(const int8_t* act, int64_t kp, const uint8_t* panel, int64_t t0, int64_t t1, int32_t* acc) {
  A8Tile::template tile<R, INT4>(act, kp, panel, t0, t1, acc);
}

template <bool INT4>
void tile_any(int rows, const int8_t* act, int64_t kp, const uint8_t* panel, int64_t t0, int64_t t1, int32_t* acc) {
  static_assert(A8Tile::MR <= 8, "tile_any dispatches up to 8 rows");
  switch (rows) {
    case 1: tile_rows<1, INT4>(act, kp, panel, t0, t1, acc); break;
    case 2: if constexpr (A8Tile::MR >= 2) tile_rows<2, INT4>(act, kp, panel, t0, t1, acc); break;
    case 3: if constexpr (A8Tile::MR >= 3) tile_rows<3, INT4>(act, kp, panel, t0, t1, acc); break;
    case 4: if constexpr (A8Tile::MR >= 4) tile_rows<4, INT4>(act, kp, panel, t0, t1, acc); break;
    case 5: if constexpr (A8Tile::MR >= 5) tile_rows<5, INT4>(act, kp, panel, t0, t1, acc); break;
    case 6: if constexpr (A8Tile::MR >= 6) tile_rows<6, INT4>(act, kp, panel, t0, t1, acc); break;
    case 7: if constexpr (A8Tile::MR >= 7) tile_rows<7, INT4>(act, kp, panel, t0, t1, acc); break;
    default: if constexpr (A8Tile::MR >= 8) tile_rows<8, INT4>(act, kp, panel, t0, t1, acc); break;
  }
}

// All row tiles of one packed panel: fp32 output (a.y) or the int32 accumulators (a.acc).
void run_panel(const QLinearA8Args& a, const Geometry& geo, int64_t p, const int8_t* act, const int32_t* sums,
               const float* sx, const uint8_t* panel, const float* pscale, const int32_t* pzero, int32_t* acc,
               float* c) {
  constexpr int MR = A8Tile::MR, NR = A8Tile::NR;
  const int64_t n0 = p * NR;
  const int cols = static_cast<int>(std::min<int64_t>(NR, a.N - n0));
  const int esize = a.y != nullptr ? tc_dtype_size(a.x_dtype) : 0;
  for (int64_t m0 = 0; m0 < a.M; m0 += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, a.M - m0));
    for (int i = 0; i < MR * NR; ++i) c[i] = 0.0f;
    for (int64_t g = 0; g < geo.groups; ++g) {
      const int64_t t0 = g * geo.k4_per_group, t1 = t0 + geo.k4_per_group;
      if (a.bits == 4) {
        tile_any<true>(rows, act + m0 * geo.kp, geo.kp, panel, t0, t1, acc);
      } else {
        tile_any<false>(rows, act + m0 * geo.kp, geo.kp, panel, t0, t1, acc);
      }
      const float* s = pscale + g * NR;
      const int32_t* z = pzero + g * NR;
      for (int r = 0; r < rows; ++r) {
        const int32_t sum = sums[(m0 + r) * geo.groups + g];
        int32_t* ar = acc + r * NR;
        // Exact: |sum_k u a| and |z sum_k a| are each below 255 * 128 * 65536 < 2^31 (TC_QLINEAR_A8_MAX_GROUP).
        for (int j = 0; j < NR; ++j) ar[j] -= z[j] * sum;
        if (a.acc != nullptr) {
          for (int j = 0; j < cols; ++j) a.acc[((m0 + r) * a.N + n0 + j) * geo.groups + g] = ar[j];
        } else if (a.act_per_group) {
          float* cr = c + r * NR;
          const float sxg = sx[(m0 + r) * geo.groups + g];
          for (int j = 0; j < NR; ++j) cr[j] += static_cast<float>(ar[j]) * (s[j] * sxg);
        } else {
          float* cr = c + r * NR;
          for (int j = 0; j < NR; ++j) cr[j] += static_cast<float>(ar[j]) * s[j];
        }
      }
    }
    if (a.y == nullptr) continue;
    for (int r = 0; r < rows; ++r) {
      void* yr = static_cast<char*>(a.y) + (m0 + r) * a.y_row_stride * esize;
      const float* cr = c + r * NR;
      const float scale = a.act_per_group ? 1.0f : sx[m0 + r];
      for (int j = 0; j < cols; ++j) {
        float v = cr[j] * scale;
        if (a.bias != nullptr) v += load_float(a.bias, a.bias_dtype, n0 + j);
        store_float(yr, a.x_dtype, n0 + j, v);
      }
    }
  }
}

// Decode on the row kernel (M <= kGemvMaxM rows, the shapes A8Tile::gemv_row takes, float output): activations
// quantized once into the row layout, with per (row, group) corrections (z - off) * sum(codes), exact in int32;
// then every weight row is streamed once, threads splitting the rows in contiguous ranges (the split of the fp32
// GEMV, at the same size threshold). Measured at M = 1 on AVX2 against the per-group loops below: bench/README.md.
constexpr int64_t kRowGemvMaxM = 4;

bool row_gemv_applies(const QLinearA8Args& a) {
  if (a.M > kRowGemvMaxM || a.y == nullptr || a.acc != nullptr) return false;
  if (a.bits == 4) return a.K % 64 == 0 && (a.group_size == 32 || a.group_size % 64 == 0);
  return a.K % 32 == 0 && a.group_size % 32 == 0;
}

// One weight row on the row kernel: per-token or per-group activation scales.
template <int M, bool INT4>
inline void gemv_row_any(bool per_group, const uint8_t* w, const int8_t* act, int64_t K, int64_t gs, const float* s,
                         const int32_t* corr, int64_t groups, const float* xs, float* out) {
  if (per_group) {
    A8Tile::template gemv_row<M, INT4, true>(w, act, K, K, gs, s, corr, groups, xs, out);
  } else {
    A8Tile::template gemv_row<M, INT4, false>(w, act, K, K, gs, s, corr, groups, nullptr, out);
  }
}

template <int M>
int row_gemv(const QLinearA8Args& a) {
  const int64_t K = a.K, groups = a.groups, gs = a.group_size, per_row = act_scales_per_row(a);
  const bool int4 = a.bits == 4;
  const int32_t off = int4 ? 0 : 128, implicit_zero = 1 << (a.bits - 1);
  const int esize = tc_dtype_size(a.x_dtype);
  Scratch row_f32(static_cast<size_t>(K) * 4), codes(static_cast<size_t>(K)), act(static_cast<size_t>(M * K)),
      sums(static_cast<size_t>(M * groups) * 4), sym_corr(static_cast<size_t>(M * groups) * 4),
      sx(static_cast<size_t>(M * per_row) * 4);
  if (!row_f32.ok() || !codes.ok() || !act.ok() || !sums.ok() || !sym_corr.ok() || !sx.ok()) {
    return TC_ERR_OUT_OF_MEMORY;
  }
  for (int m = 0; m < M; ++m) {
    int8_t* c = codes.as<int8_t>();
    if (!quantize_activation_row(a, m, row_f32.as<float>(), c, sx.as<float>() + m * per_row)) {
      return TC_ERR_NOT_FINITE;
    }
    int8_t* am = act.as<int8_t>() + m * K;
    if (int4) {
      for (int64_t b = 0; b < K; b += 64) {
        for (int i = 0; i < 32; ++i) {
          am[b + i] = c[b + 2 * i];
          am[b + 32 + i] = c[b + 2 * i + 1];
        }
      }
    } else {
      memcpy(am, c, static_cast<size_t>(K));
    }
    for (int64_t g = 0; g < groups; ++g) {
      int32_t sum = 0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) sum += c[k];
      sums.as<int32_t>()[m * groups + g] = sum;
      sym_corr.as<int32_t>()[m * groups + g] = (implicit_zero - off) * sum;
    }
  }
  const int64_t row_bytes = int4 ? K / 2 : K;
  const bool fp32_scales = a.scale_dtype == TC_FLOAT32;
  int threads = a.N * K < kQLinearParallelMinWeights ? 1 : a.num_threads;
  if (threads > a.N) threads = static_cast<int>(a.N);
  std::atomic<int> status{TC_OK};
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t n0 = a.N * t / nt, n1 = a.N * (t + 1) / nt;
    // Per thread: the row's scales as fp32 (other scale dtypes) and its corrections (asymmetric codes).
    Scratch sbuf(fp32_scales ? 4 : static_cast<size_t>(groups) * 4),
        cbuf(a.zeros == nullptr ? 4 : static_cast<size_t>(M * groups) * 4);
    if (!sbuf.ok() || !cbuf.ok()) {
      status = TC_ERR_OUT_OF_MEMORY;
    } else {
      const int32_t* corr = a.zeros == nullptr ? sym_corr.as<int32_t>() : cbuf.as<int32_t>();
      for (int64_t n = n0; n < n1; ++n) {
        const float* s = fp32_scales ? static_cast<const float*>(a.scales) + n * groups : sbuf.as<float>();
        if (!fp32_scales) {
          for (int64_t g = 0; g < groups; ++g) sbuf.as<float>()[g] = load_float(a.scales, a.scale_dtype, n * groups + g);
        }
        if (a.zeros != nullptr) {
          for (int m = 0; m < M; ++m) {
            for (int64_t g = 0; g < groups; ++g) {
              cbuf.as<int32_t>()[m * groups + g] = (a.zeros[n * groups + g] - off) * sums.as<int32_t>()[m * groups + g];
            }
          }
        }
        float out[M];
        const uint8_t* w = a.qweight + n * row_bytes;
        if (int4) {
          gemv_row_any<M, true>(a.act_per_group, w, act.as<int8_t>(), K, gs, s, corr, groups, sx.as<float>(), out);
        } else {
          gemv_row_any<M, false>(a.act_per_group, w, act.as<int8_t>(), K, gs, s, corr, groups, sx.as<float>(), out);
        }
        const float bias = a.bias != nullptr ? load_float(a.bias, a.bias_dtype, n) : 0.0f;
        for (int m = 0; m < M; ++m) {
          const float scale = a.act_per_group ? 1.0f : sx.as<float>()[m];
          store_float(static_cast<char*>(a.y) + m * a.y_row_stride * esize, a.x_dtype, n, out[m] * scale + bias);
        }
      }
    }
  }
  return status.load();
}

int row_gemv_any(const QLinearA8Args& a) {
  switch (a.M) {
    case 1: return row_gemv<1>(a);
    case 2: return row_gemv<2>(a);
    case 3: return row_gemv<3>(a);
    default: return row_gemv<4>(a);
  }
}

// Decode on the other shapes (M <= kGemvMaxM rows): every weight row is read once from its stored layout. Packing panels, which the
// prefill path amortizes over 512 rows, costs more than the dot products themselves at batch 1 (measured: 6.6 ms
// against fbgemm's 1.2 ms at 4096 -> 14336). The activation codes are split into even and odd columns so that both
// nibbles of an int4 byte meet their activations at unit stride; the plain loops below vectorize per TU (u8 x s8
// dot products: vpdpbusd under -mavx512vnni, widening multiply-adds under AVX2). Integer results are those of the
// panel path exactly.
constexpr int64_t kGemvMaxM = 4;

inline int32_t dot_u8_s8(const uint8_t* w, const int8_t* act, int64_t n) {
  int32_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<int32_t>(w[i]) * static_cast<int32_t>(act[i]);
  return s;
}

inline int32_t dot_u4_s8(const uint8_t* w, const int8_t* even, const int8_t* odd, int64_t nbytes) {
  int32_t s = 0;
  for (int64_t i = 0; i < nbytes; ++i) {
    s += static_cast<int32_t>(w[i] & 0x0F) * static_cast<int32_t>(even[i]) +
         static_cast<int32_t>(w[i] >> 4) * static_cast<int32_t>(odd[i]);
  }
  return s;
}

bool gemv_applies(const QLinearA8Args& a) { return a.M <= kGemvMaxM && (a.bits == 8 || a.group_size % 2 == 0); }

int qlinear_a8_gemv(const QLinearA8Args& a) {
  const int64_t K = a.K, gs = a.group_size, groups = a.groups;
  const int esize = a.y != nullptr ? tc_dtype_size(a.x_dtype) : 0;
  // The codes, group sums and scales of the prefill path (groups padded to gp columns); int4 then regroups each row's
  // codes as K/2 even columns followed by K/2 odd ones.
  const Geometry geo = geometry_of(a);
  Scratch padded(static_cast<size_t>(a.M * geo.kp)), sums(static_cast<size_t>(a.M * groups) * 4),
      sx(static_cast<size_t>(a.M * act_scales_per_row(a)) * 4), split(a.bits == 4 ? static_cast<size_t>(a.M * K) : 1);
  if (!padded.ok() || !sums.ok() || !sx.ok() || !split.ok()) return TC_ERR_OUT_OF_MEMORY;
  const int status = prepare_activations(a, geo, padded.as<int8_t>(), sums.as<int32_t>(), sx.as<float>());
  if (status != TC_OK) return status;
  if (a.bits == 4) {
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* src = padded.as<int8_t>() + m * geo.kp;
      int8_t* dst = split.as<int8_t>() + m * K;
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t i = 0; i < gs; i += 2) {
          dst[(g * gs + i) / 2] = src[g * geo.gp + i];
          dst[K / 2 + (g * gs + i) / 2] = src[g * geo.gp + i + 1];
        }
      }
    }
  }
  const int64_t row_bytes = a.bits == 4 ? K / 2 : K;
  const int32_t implicit_zero = 1 << (a.bits - 1);
  const int threads = static_cast<int>(std::min<int64_t>(a.num_threads, (a.N + 63) / 64));
  const int32_t* all_sums = sums.as<int32_t>();
  const float* all_sx = sx.as<float>();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t n = 0; n < a.N; ++n) {
    const uint8_t* row = a.qweight + n * row_bytes;
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* act = a.bits == 4 ? split.as<int8_t>() + m * K : padded.as<int8_t>() + m * geo.kp;
      float c = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t dot = a.bits == 4 ? dot_u4_s8(row + g * gs / 2, act + g * gs / 2, act + K / 2 + g * gs / 2, gs / 2)
                                        : dot_u8_s8(row + g * gs, act + g * geo.gp, gs);
        const int32_t z = a.zeros != nullptr ? a.zeros[n * groups + g] : implicit_zero;
        const int32_t v = dot - z * all_sums[m * groups + g];
        if (a.acc != nullptr) {
          a.acc[(m * a.N + n) * groups + g] = v;
        } else {
          const float s = load_float(a.scales, a.scale_dtype, n * groups + g);
          c += static_cast<float>(v) * (a.act_per_group ? s * all_sx[m * groups + g] : s);
        }
      }
      if (a.y == nullptr) continue;
      float out = a.act_per_group ? c : c * all_sx[m];
      if (a.bias != nullptr) out += load_float(a.bias, a.bias_dtype, n);
      store_float(static_cast<char*>(a.y) + m * a.y_row_stride * esize, a.x_dtype, n, out);
    }
  }
  return TC_OK;
}

}  // namespace

// The entry points of this ISA (declared in kernel_table.h; dispatch.cpp puts them in the KernelTable).
const char* const qlinear_a8_name = A8Tile::kName;

int quantize_activations(const QLinearA8Args& a, int8_t* codes, float* act_scales) {
  const int qmax = (1 << (a.act_bits - 1)) - 1;
  const int esize = tc_dtype_size(a.x_dtype);
  std::atomic<int> status{TC_OK};
  const int threads = static_cast<int>(std::min<int64_t>(a.num_threads, a.M));
#pragma omp parallel num_threads(threads)
  {
    Scratch row(static_cast<size_t>(a.K) * sizeof(float));
    if (!row.ok()) status = TC_ERR_OUT_OF_MEMORY;
#pragma omp for schedule(static)
    for (int64_t m = 0; m < a.M; ++m) {
      if (!row.ok()) continue;
      const void* xr = static_cast<const char*>(a.x) + m * a.x_row_stride * esize;
      if (!quantize_row_any(a.x_dtype, xr, a.K, qmax, row.as<float>(), codes + m * a.K, act_scales + m)) {
        status = TC_ERR_NOT_FINITE;
      }
    }
  }
  return status.load();
}

int qlinear_a8(const QLinearA8Args& a) {
  if (row_gemv_applies(a)) return row_gemv_any(a);
  if (gemv_applies(a)) return qlinear_a8_gemv(a);
  constexpr int MR = A8Tile::MR, NR = A8Tile::NR;
  const Geometry geo = geometry_of(a);
  Scratch act(static_cast<size_t>(a.M * geo.kp)), sums(static_cast<size_t>(a.M * geo.groups) * 4),
      sx(static_cast<size_t>(a.M * act_scales_per_row(a)) * 4);
  if (!act.ok() || !sums.ok() || !sx.ok()) return TC_ERR_OUT_OF_MEMORY;
  int status = prepare_activations(a, geo, act.as<int8_t>(), sums.as<int32_t>(), sx.as<float>());
  if (status != TC_OK) return status;
  const int64_t panels = (a.N + NR - 1) / NR;
  std::atomic<int> st{TC_OK};
  const int threads = static_cast<int>(std::min<int64_t>(a.num_threads, panels));
#pragma omp parallel num_threads(threads)
  {
    Scratch panel(static_cast<size_t>(geo.kp * NR)), pscale(static_cast<size_t>(geo.groups * NR) * 4),
        pzero(static_cast<size_t>(geo.groups * NR) * 4), acc(MR * NR * 4), c(MR * NR * 4);
    const bool ok = panel.ok() && pscale.ok() && pzero.ok() && acc.ok() && c.ok();
    if (!ok) st = TC_ERR_OUT_OF_MEMORY;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      if (!ok) continue;
      pack_panel<NR>(a, geo, p, panel.as<uint8_t>(), pscale.as<float>(), pzero.as<int32_t>());
      run_panel(a, geo, p, act.as<int8_t>(), sums.as<int32_t>(), sx.as<float>(), panel.as<uint8_t>(),
                pscale.as<float>(), pzero.as<int32_t>(), acc.as<int32_t>(), c.as<float>());
    }
  }
  return st.load();
}

}  // namespace TC_ISA_NS
}  // namespace tcompress
