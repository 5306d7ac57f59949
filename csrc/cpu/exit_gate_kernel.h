// The CPU exit_gate kernels, written once over a vector type and compiled once per ISA. Each exit_gate_<isa>.cpp
// defines TC_ISA_NS and TC_GVEC, includes its vector headers and then this file, which defines
// tcompress::<isa>::exit_gate and exit_gate_head (kernel_table.h). Everything else has internal linkage.
//
// One pass over memory per row (see tcompress/exit_gate.h): a chunk of at most TC_EXIT_GATE_CHUNK elements is
// read for its maximum, NaN check and per-lane top-2 (pass 1), and then, from L1, for exp(l - m) and
// exp(l - m) * (l - m) (pass 2). The running maximum m is one scalar shared by every lane, so the per-lane sums
// are rescaled together (one scalar exp) when a chunk raises it. Partial statistics of vocabulary ranges (the
// threads of one row, or of the fused head GEMV) merge exactly like chunks do.
#pragma once
#ifndef TC_GVEC
#error "define TC_GVEC (the exit_gate vector type) before including exit_gate_kernel.h"
#endif

#include <math.h>
#include <omp.h>
#include <stdint.h>

#include <algorithm>
#include <new>
#include <vector>

#include "elem_io.h"
#include "kernel_table.h"
#include "tcompress/exit_gate.h"
#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

using V = TC_GVEC;
using VT = typename V::T;

constexpr float kNegInf = -INFINITY;
constexpr int64_t kChunk = TC_EXIT_GATE_CHUNK;
constexpr int64_t kMinSplit = 4096;     // vocabulary elements per thread below which splitting a row does not pay
constexpr int64_t kHeadChunkRows = 256;  // head rows whose logits are computed into a buffer before pass 2

// The statistics of a vocabulary range: max m, S = sum e^(l - m), T = sum e^(l - m) (l - m), the second largest
// logit (with multiplicity), the first index of the maximum, and whether the range has a NaN or +inf.
struct RangeStats {
  float m = kNegInf;
  float s = 0.0f;
  float t = 0.0f;
  float top2 = kNegInf;
  int64_t argmax = -1;
  int bad = TC_EXIT_BAD_NONE;
};

template <int DT>
inline float load_one(const void* row, int64_t i) {
  if constexpr (DT == TC_FLOAT32) {
    return static_cast<const float*>(row)[i];
  } else if constexpr (DT == TC_FLOAT16) {
    return f16_to_float(static_cast<const uint16_t*>(row)[i]);
  } else {
    return bf16_to_float(static_cast<const uint16_t*>(row)[i]);
  }
}

// The tail of a chunk (fewer than V::W elements) as one vector padded with -inf, which contributes nothing.
template <int DT>
inline VT load_tail(const void* row, int64_t i, int64_t n) {
  float tmp[V::W];
  for (int j = 0; j < V::W; ++j) tmp[j] = j < n ? load_one<DT>(row, i + j) : kNegInf;
  return V::load(tmp);
}

// Accumulates a row (or a vocabulary range of one) chunk by chunk; index_base is the vocabulary index of
// element 0 of `row` (for the argmax).
class OnlineSoftmax {
 public:
  OnlineSoftmax() : s_(V::zero()), t_(V::zero()), top1_(V::splat(kNegInf)), top2_(V::splat(kNegInf)) {}

  // Elements [begin, begin + n) of `row`, n <= kChunk. Returns false after a NaN or +inf (stats().bad says which).
  template <int DT>
  bool add_chunk(const void* row, int64_t begin, int64_t n, int64_t index_base) {
    typename V::M nan = V::no_nan();
    VT chunk_max = V::splat(kNegInf);
    const int64_t full = n - n % V::W;
    for (int64_t i = 0; i < full; i += V::W) {
      const VT x = load_elems<V, DT>(row, begin + i);
      nan = V::or_nan(nan, x);
      top2_ = V::max(top2_, V::min(top1_, x));
      top1_ = V::max(top1_, x);
      chunk_max = V::max(chunk_max, x);
    }
    if (full < n) {
      const VT x = load_tail<DT>(row, begin + full, n - full);
      nan = V::or_nan(nan, x);
      top2_ = V::max(top2_, V::min(top1_, x));
      top1_ = V::max(top1_, x);
      chunk_max = V::max(chunk_max, x);
    }
    if (V::any(nan)) {
      bad_ = TC_EXIT_BAD_NAN;
      return false;
    }
    const float cmax = V::hmax(chunk_max);
    if (cmax == INFINITY) {
      bad_ = TC_EXIT_BAD_POSINF;
      return false;
    }
    if (cmax == kNegInf) return true;  // only -inf here: nothing to add
    if (cmax > m_) {
      for (int64_t i = 0; i < n; ++i) {
        if (load_one<DT>(row, begin + i) == cmax) {
          argmax_ = index_base + begin + i;
          break;
        }
      }
      if (m_ != kNegInf) {
        // S' = S e^(m - m'),  T' = e^(m - m') (T + (m - m') S).
        const float delta = m_ - cmax;
        const VT scale = V::splat(expf(delta));
        t_ = V::mul(scale, V::fmadd(V::splat(delta), s_, t_));
        s_ = V::mul(scale, s_);
      }
      m_ = cmax;
    }
    const VT m = V::splat(m_);
    for (int64_t i = 0; i < full; i += V::W) {
      const VT d = V::clamp_exp_arg(V::sub(load_elems<V, DT>(row, begin + i), m));
      const VT e = V::exp_nonpositive(d);
      s_ = V::add(s_, e);
      t_ = V::fmadd(e, d, t_);
    }
    if (full < n) {
      const VT d = V::clamp_exp_arg(V::sub(load_tail<DT>(row, begin + full, n - full), m));
      const VT e = V::exp_nonpositive(d);
      s_ = V::add(s_, e);
      t_ = V::fmadd(e, d, t_);
    }
    return true;
  }

  RangeStats stats() const {
    RangeStats r;
    r.bad = bad_;
    r.m = m_;
    r.argmax = argmax_;
    r.s = V::hsum(s_);
    r.t = V::hsum(t_);
    // Second largest of the per-lane (top1, top2) pairs, with multiplicity: a tie for the maximum gives top2 == m.
    float t1[V::W], t2[V::W];
    V::store(t1, top1_);
    V::store(t2, top2_);
    float best = kNegInf, second = kNegInf;
    for (int j = 0; j < 2 * V::W; ++j) {
      const float v = j < V::W ? t1[j] : t2[j - V::W];
      if (v > best) {
        second = best;
        best = v;
      } else if (v > second) {
        second = v;
      }
    }
    r.top2 = second;
    return r;
  }

 private:
  VT s_, t_, top1_, top2_;
  float m_ = kNegInf;
  int64_t argmax_ = -1;
  int bad_ = TC_EXIT_BAD_NONE;
};

// The statistics of two adjacent ranges, `a` before `b` (a tie for the maximum keeps a's argmax).
inline RangeStats merge(const RangeStats& a, const RangeStats& b) {
  if (a.bad != TC_EXIT_BAD_NONE) return a;
  if (b.bad != TC_EXIT_BAD_NONE) return b;
  if (b.m == kNegInf) {
    RangeStats r = a;
    r.top2 = std::max(a.top2, b.m);
    return r;
  }
  if (a.m == kNegInf) {
    RangeStats r = b;
    r.top2 = std::max(b.top2, a.m);
    return r;
  }
  RangeStats r;
  r.m = std::max(a.m, b.m);
  r.top2 = a.m >= b.m ? std::max(a.top2, b.m) : std::max(a.m, b.top2);
  r.argmax = b.m > a.m ? b.argmax : a.argmax;
  const float da = a.m - r.m, db = b.m - r.m;
  const float fa = expf(da), fb = expf(db);
  r.s = fa * a.s + fb * b.s;
  r.t = fa * (a.t + da * a.s) + fb * (b.t + db * b.s);
  return r;
}

// The criterion's confidence, from complete row statistics (m finite).
inline float confidence_of(const RangeStats& r, int criterion) {
  switch (criterion) {
    case TC_EXIT_MAX_PROB: return 1.0f / r.s;
    case TC_EXIT_MARGIN: return (1.0f - expf(r.top2 - r.m)) / r.s;
    default: return std::max(0.0f, logf(r.s) - r.t / r.s);  // rounding can leave a one-hot row at -1e-7
  }
}

inline bool exits(float confidence, int criterion, float threshold) {
  return criterion == TC_EXIT_ENTROPY ? confidence < threshold : confidence >= threshold;
}

// The bad kind of complete row statistics (a row whose every entry is -inf has no softmax).
inline int row_bad_kind(const RangeStats& r) {
  if (r.bad != TC_EXIT_BAD_NONE) return r.bad;
  return r.m == kNegInf ? TC_EXIT_BAD_ALL_NEGINF : TC_EXIT_BAD_NONE;
}

template <int DT>
RangeStats range_stats(const void* row, int64_t begin, int64_t end) {
  OnlineSoftmax acc;
  for (int64_t c = begin; c < end; c += kChunk) {
    if (!acc.add_chunk<DT>(row, c, std::min(kChunk, end - c), 0)) break;
  }
  return acc.stats();
}

int thread_count(int requested) { return requested > 0 ? requested : omp_get_max_threads(); }

template <int DT>
int exit_gate_dtype(const ExitGateArgs& a) {
  const int threads = thread_count(a.num_threads);
  // Fewer rows than threads: split each row's vocabulary into ranges of at least kMinSplit elements.
  int64_t splits = 1;
  if (a.rows < threads) splits = std::max<int64_t>(1, std::min<int64_t>((threads + a.rows - 1) / a.rows, a.vocab / kMinSplit));
  const int64_t items = a.rows * splits;
  std::vector<RangeStats> parts;
  try {
    parts.resize(static_cast<size_t>(items));
  } catch (const std::bad_alloc&) {
    return TC_ERR_OUT_OF_MEMORY;
  }
  const int64_t span = (a.vocab + splits - 1) / splits;
  const int team = static_cast<int>(std::min<int64_t>(threads, items));
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t r = item / splits, part = item % splits;
    const int64_t begin = std::min(a.vocab, part * span), end = std::min(a.vocab, begin + span);
    const void* row = static_cast<const char*>(a.logits) + r * a.row_stride * tc_dtype_size(DT);
    parts[item] = range_stats<DT>(row, begin, end);
  }
  for (int64_t r = 0; r < a.rows; ++r) {
    RangeStats st = parts[r * splits];
    for (int64_t part = 1; part < splits; ++part) st = merge(st, parts[r * splits + part]);
    const int bad = row_bad_kind(st);
    if (bad != TC_EXIT_BAD_NONE) {
      *a.bad_row = r;
      *a.bad_kind = bad;
      return TC_ERR_NOT_FINITE;
    }
    const float conf = confidence_of(st, a.criterion);
    a.confidence[r] = conf;
    a.exit_mask[r] = exits(conf, a.criterion, a.threshold) ? 1 : 0;
    if (a.argmax != nullptr) a.argmax[r] = st.argmax;
  }
  return TC_OK;
}

// out[j] = dot(weight row v0 + j, hidden) (+ bias) for j < n: four rows at a time share the loads of hidden.
template <int DT>
void head_logits(const ExitGateHeadArgs& a, int64_t v0, int64_t n, float* out) {
  const int64_t d = a.d, full = d - d % V::W;
  const size_t esize = static_cast<size_t>(tc_dtype_size(DT));
  auto row_ptr = [&](int64_t v) { return static_cast<const char*>(a.weight) + v * a.weight_row_stride * esize; };
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const void* w0 = row_ptr(v0 + j);
    const void* w1 = row_ptr(v0 + j + 1);
    const void* w2 = row_ptr(v0 + j + 2);
    const void* w3 = row_ptr(v0 + j + 3);
    VT acc0 = V::zero(), acc1 = V::zero(), acc2 = V::zero(), acc3 = V::zero();
    for (int64_t k = 0; k < full; k += V::W) {
      const VT h = V::load(a.hidden + k);
      acc0 = V::fmadd(load_elems<V, DT>(w0, k), h, acc0);
      acc1 = V::fmadd(load_elems<V, DT>(w1, k), h, acc1);
      acc2 = V::fmadd(load_elems<V, DT>(w2, k), h, acc2);
      acc3 = V::fmadd(load_elems<V, DT>(w3, k), h, acc3);
    }
    float s0 = V::hsum(acc0), s1 = V::hsum(acc1), s2 = V::hsum(acc2), s3 = V::hsum(acc3);
    for (int64_t k = full; k < d; ++k) {
      const float h = a.hidden[k];
      s0 += load_one<DT>(w0, k) * h;
      s1 += load_one<DT>(w1, k) * h;
      s2 += load_one<DT>(w2, k) * h;
      s3 += load_one<DT>(w3, k) * h;
    }
    out[j] = s0;
    out[j + 1] = s1;
    out[j + 2] = s2;
    out[j + 3] = s3;
  }
  for (; j < n; ++j) {
    const void* w = row_ptr(v0 + j);
    VT acc = V::zero();
    for (int64_t k = 0; k < full; k += V::W) acc = V::fmadd(load_elems<V, DT>(w, k), V::load(a.hidden + k), acc);
    float s = V::hsum(acc);
    for (int64_t k = full; k < d; ++k) s += load_one<DT>(w, k) * a.hidden[k];
    out[j] = s;
  }
  if (a.bias != nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] += a.bias[v0 + i];
  }
}

template <int DT>
int exit_gate_head_dtype(const ExitGateHeadArgs& a) {
  const int threads = thread_count(a.num_threads);
  // Each thread takes a whole number of kHeadChunkRows blocks; small heads run on fewer threads.
  const int64_t blocks = (a.vocab + kHeadChunkRows - 1) / kHeadChunkRows;
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
  const int64_t span = (blocks + splits - 1) / splits * kHeadChunkRows;
  std::vector<RangeStats> parts;
  try {
    parts.resize(static_cast<size_t>(splits));
  } catch (const std::bad_alloc&) {
    return TC_ERR_OUT_OF_MEMORY;
  }
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(splits)) if (splits > 1)
  for (int64_t part = 0; part < splits; ++part) {
    const int64_t begin = std::min(a.vocab, part * span), end = std::min(a.vocab, begin + span);
    alignas(64) float logits[kHeadChunkRows];
    OnlineSoftmax acc;
    for (int64_t v = begin; v < end; v += kHeadChunkRows) {
      const int64_t n = std::min(kHeadChunkRows, end - v);
      head_logits<DT>(a, v, n, logits);
      if (!acc.add_chunk<TC_FLOAT32>(logits, 0, n, v)) break;
    }
    parts[part] = acc.stats();
  }
  RangeStats st = parts[0];
  for (int64_t part = 1; part < splits; ++part) st = merge(st, parts[part]);
  const int bad = row_bad_kind(st);
  if (bad != TC_EXIT_BAD_NONE) {
    *a.bad_kind = bad;
    return TC_ERR_NOT_FINITE;
  }
  const float conf = confidence_of(st, a.criterion);
  *a.confidence = conf;
  *a.exit_mask = exits(conf, a.criterion, a.threshold) ? 1 : 0;
  *a.argmax = st.argmax;
  return TC_OK;
}

}  // namespace

// The entry points of this ISA (declared in kernel_table.h; dispatch.cpp puts them in the KernelTable).
int exit_gate(const ExitGateArgs& a) {
  switch (a.dtype) {
    case TC_FLOAT32: return exit_gate_dtype<TC_FLOAT32>(a);
    case TC_FLOAT16: return exit_gate_dtype<TC_FLOAT16>(a);
    case TC_BFLOAT16: return exit_gate_dtype<TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

int exit_gate_head(const ExitGateHeadArgs& a) {
  switch (a.dtype) {
    case TC_FLOAT32: return exit_gate_head_dtype<TC_FLOAT32>(a);
    case TC_FLOAT16: return exit_gate_head_dtype<TC_FLOAT16>(a);
    case TC_BFLOAT16: return exit_gate_head_dtype<TC_BFLOAT16>(a);
    default: return TC_ERR_BAD_DTYPE;
  }
}

}  // namespace TC_ISA_NS
}  // namespace tcompress
