// tc_decode_step_cpu: one batch-1 decode step of a pre-norm decoder, Llama family or GPT-2 (see tcompress/decode.h).
// The projections run on the qlinear kernels of the ISA in use; norms, rotary, attention and the MLP's activation
// are short loops here
// (O(d) and O(heads * pos * head_dim) per step, against O(d * ffn) bytes of weights streamed by the projections).
#include <omp.h>

#include <cmath>
#include <cstring>

#include "qlinear_args.h"
#include "tcompress/decode.h"
#include "tcompress/hadamard.h"
#include "tcompress/qlinear.h"
#include "tcompress/qlinear_a8.h"

namespace {

// Attention work (multiply-adds) below which one thread does all heads: a parallel region costs a few
// microseconds, a head's scores over a short cache less.
constexpr int64_t kParallelAttentionWork = 1 << 16;

int64_t groups_of(const tc_decode_linear& l) { return l.group_size == 0 ? 1 : l.K / l.group_size; }

// Rows [r0, r1) of one projection on one thread: the kernel called on that slice of the weights and the output.
int run_rows(const tc_decode_linear& l, const float* x, float* y, int64_t r0, int64_t r1) {
  const int64_t g = groups_of(l), n = r1 - r0;
  const uint8_t* qweight = l.qweight + r0 * (l.K * l.bits / 8);
  const void* scales = static_cast<const char*>(l.scales) + r0 * g * tc_dtype_size(l.scale_dtype);
  const uint8_t* zeros = l.zeros == nullptr ? nullptr : l.zeros + r0 * g;
  const void* bias = l.bias == nullptr ? nullptr : static_cast<const char*>(l.bias) + r0 * tc_dtype_size(l.bias_dtype);
  if (l.act_bits != 0) {
    return tc_qlinear_a8_cpu(x, TC_FLOAT32, 1, l.K, l.K, qweight, n, l.bits, scales, l.scale_dtype, zeros,
                             l.group_size, l.act_bits, l.act_per_group, bias, l.bias_dtype, y + r0, n, 1);
  }
  return tc_qlinear_cpu(x, TC_FLOAT32, 1, l.K, l.K, qweight, n, l.bits, scales, l.scale_dtype, zeros, l.group_size,
                        bias, l.bias_dtype, y + r0, n, 1);
}

// ys[i] = x @ W_i^T (+ bias_i) for `count` projections reading the same x, in one parallel region: the rows of all
// of them are split evenly over the threads (contiguous ranges), so small projections (k, v) share the threads
// with the large ones and a block pays four fork/joins instead of seven. Each slice runs on the one-thread kernel.
int run_linears(const tc_decode_linear* const* ls, float* const* ys, int count, const float* x, int num_threads) {
  int64_t rows = 0, weights = 0;
  for (int i = 0; i < count; ++i) {
    rows += ls[i]->N;
    weights += ls[i]->N * ls[i]->K;
  }
  // A group too small for the GEMV's own threads is too small for them here as well.
  int threads = weights < tcompress::kQLinearParallelMinWeights ? 1 : num_threads;
  if (threads > rows) threads = static_cast<int>(rows);
  int status = TC_OK;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    int64_t offset = 0;
    for (int i = 0; i < count; ++i) {
      const int64_t r0 = begin > offset ? begin - offset : 0;
      const int64_t r1 = end - offset < ls[i]->N ? end - offset : ls[i]->N;
      if (r0 < r1) {
        const int st = run_rows(*ls[i], x, ys[i], r0, r1);
        if (st != TC_OK) {
#pragma omp atomic write
          status = st;
        }
      }
      offset += ls[i]->N;
    }
  }
  return status;
}

// y = x @ W^T (+ bias) for one projection; with an online Hadamard, x goes through the transform into `rotated`
// (K floats of scratch) first.
int run_linear(const tc_decode_linear& l, const float* x, float* y, float* rotated, int num_threads) {
  if (l.online_hadamard) {
    const int st = tc_hadamard_cpu(x, rotated, 1, l.K, l.K, l.K, TC_FLOAT32, l.hadamard, l.hadamard_k,
                                   l.hadamard_scale, 1);
    if (st != TC_OK) return st;
    x = rotated;
  }
  const tc_decode_linear* ls[1] = {&l};
  float* ys[1] = {y};
  return run_linears(ls, ys, 1, x, num_threads);
}

// out = w * (x * rsqrt(mean(x^2) + eps)), accumulated in double so the mean does not depend on d's size.
void rms_norm(const float* x, const float* w, float* out, int64_t d, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < d; ++i) sum += double(x[i]) * double(x[i]);
  const float inv = 1.0f / std::sqrt(float(sum / double(d)) + eps);
  for (int64_t i = 0; i < d; ++i) out[i] = w[i] * (x[i] * inv);
}

// out = w * (x - mean) * rsqrt(var + eps) + b (biased variance; b may be NULL), in double for the moments.
void layer_norm(const float* x, const float* w, const float* b, float* out, int64_t d, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < d; ++i) sum += x[i];
  const double mean = sum / double(d);
  double sq = 0.0;
  for (int64_t i = 0; i < d; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(float(sq / double(d)) + eps);
  const float m = float(mean);
  for (int64_t i = 0; i < d; ++i) out[i] = w[i] * ((x[i] - m) * inv) + (b != nullptr ? b[i] : 0.0f);
}

void norm(const tc_decode_model* m, const float* x, const float* w, const float* b, float* out) {
  if (m->norm_type == TC_DECODE_LAYERNORM) {
    layer_norm(x, w, b, out, m->d, m->eps);
  } else {
    rms_norm(x, w, out, m->d, m->eps);
  }
}

// h (n) <- the MLP's activation: SiLU(h) * up, or GELU(h).
void activate(int mlp_type, float* h, const float* up, int64_t n) {
  if (mlp_type == TC_DECODE_MLP_SILU_GATED) {
    for (int64_t i = 0; i < n; ++i) h[i] = h[i] / (1.0f + std::exp(-h[i])) * up[i];
  } else if (mlp_type == TC_DECODE_MLP_GELU_TANH) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    for (int64_t i = 0; i < n; ++i) h[i] = 0.5f * h[i] * (1.0f + std::tanh(c * (h[i] + 0.044715f * h[i] * h[i] * h[i])));
  } else {
    for (int64_t i = 0; i < n; ++i) h[i] = 0.5f * h[i] * (1.0f + std::erf(h[i] * 0.7071067811865476f));
  }
}

// x (heads, hd) <- x * cos + rotate_half(x) * sin at one position.
void rotary(float* x, int64_t heads, int64_t hd, const float* cos, const float* sin) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

// q . k over n: 8 partial sums, so that the adds do not wait on one another (one running sum is bound by the add's
// latency: 4 cycles per element, which made attention ~15% of a SmolLM2 step at 100 positions) and vectorize.
float dot(const float* q, const float* k, int64_t n) {
  float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) part[j] += q[i + j] * k[i + j];
  }
  for (; i < n; ++i) part[0] += q[i] * k[i];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// out (hd) = softmax(q . k[t] * scale over t in [first, last]) weighted sum of v[t]; scores: (max_len) scratch.
void attend_one_head(const float* q, const float* keys, const float* values, int64_t first, int64_t last, int64_t hd,
                     float scale, float* scores, float* out) {
  float top = -INFINITY;
  for (int64_t t = first; t <= last; ++t) {
    scores[t] = dot(q, keys + t * hd, hd) * scale;
    top = scores[t] > top ? scores[t] : top;
  }
  float total = 0.0f;
  for (int64_t t = first; t <= last; ++t) {
    scores[t] = std::exp(scores[t] - top);
    total += scores[t];
  }
  const float inv = 1.0f / total;
  for (int64_t i = 0; i < hd; ++i) out[i] = 0.0f;
  for (int64_t t = first; t <= last; ++t) {
    const float p = scores[t] * inv;
    const float* v = values + t * hd;
    for (int64_t i = 0; i < hd; ++i) out[i] += p * v[i];
  }
}

bool dtype_ok(int dtype) { return dtype == TC_FLOAT32 || dtype == TC_FLOAT16 || dtype == TC_BFLOAT16; }

// n = k * 2^m with k <= TC_HADAMARD_MAX_K (the transform's sizes; which k have a construction, tc_hadamard_cpu
// checks when it runs, and the Python side takes k from the same table).
bool hadamard_size_ok(int64_t n, int64_t k) {
  if (k < 1 || k > TC_HADAMARD_MAX_K || n % k) return false;
  const int64_t p = n / k;
  return (p & (p - 1)) == 0;
}

// Everything the kernels would refuse at the first step, refused once here. shared_input: q/k/v and gate/up read
// one input together, so none of them may transform it on its own.
bool linear_ok(const tc_decode_linear& l, int64_t K, int64_t N, bool shared_input = false) {
  if (l.qweight == nullptr || l.scales == nullptr || l.K != K || l.N != N) return false;
  if (l.bits != 4 && l.bits != 8) return false;
  if (l.bits == 4 && K % 2) return false;
  if (!dtype_ok(l.scale_dtype) || (l.bias != nullptr && !dtype_ok(l.bias_dtype))) return false;
  if (!(l.group_size == 0 || (l.group_size > 0 && K % l.group_size == 0))) return false;
  if (l.act_bits != 0) {
    if ((l.act_bits != 8 && l.act_bits != 4) || (l.act_per_group != 0 && l.act_per_group != 1)) return false;
    if ((l.group_size == 0 ? K : l.group_size) > TC_QLINEAR_A8_MAX_GROUP) return false;
  }
  if (l.online_hadamard) {
    if (shared_input || !hadamard_size_ok(K, l.hadamard_k) || (l.hadamard_k > 1 && l.hadamard == nullptr)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int64_t tc_decode_scratch_floats(const tc_decode_model* m) {
  const int64_t q = m->n_heads * m->head_dim, kv = m->n_kv_heads * m->head_dim;
  // x, xn (d each); q, k, v; attention output (q); scores (n_heads, max_len); gate, up (ffn each); the input of
  // an online Hadamard (the widest projection input).
  const int64_t widest = m->ffn > q ? (m->ffn > m->d ? m->ffn : m->d) : (q > m->d ? q : m->d);
  return 2 * m->d + 2 * q + 2 * kv + m->n_heads * m->max_len + 2 * m->ffn + widest;
}

extern "C" int tc_decode_check(const tc_decode_model* m, int64_t* bad_layer) {
  if (bad_layer != nullptr) *bad_layer = -1;
  if (m == nullptr || m->layers == nullptr || m->embed == nullptr || m->final_norm == nullptr ||
      m->scratch == nullptr || (m->rope_cos == nullptr) != (m->rope_sin == nullptr)) {
    return TC_ERR_NULL_POINTER;
  }
  if (m->norm_type != TC_DECODE_RMSNORM && m->norm_type != TC_DECODE_LAYERNORM) return TC_ERR_BAD_ARGUMENT;
  if (m->mlp_type < TC_DECODE_MLP_SILU_GATED || m->mlp_type > TC_DECODE_MLP_GELU_ERF) return TC_ERR_BAD_ARGUMENT;
  const bool gated = m->mlp_type == TC_DECODE_MLP_SILU_GATED;
  if (m->n_layers < 1 || m->d < 1 || m->n_heads < 1 || m->n_kv_heads < 1 || m->head_dim < 2 || m->head_dim % 2 ||
      m->ffn < 1 || m->max_len < 1 || m->vocab < 1 || m->sliding_window < 0 || m->n_heads % m->n_kv_heads) {
    return TC_ERR_BAD_SIZE;
  }
  if (!(m->eps >= 0.0f) || !std::isfinite(m->attn_scale)) return TC_ERR_BAD_ARGUMENT;
  const int64_t d = m->d, q = m->n_heads * m->head_dim, kv = m->n_kv_heads * m->head_dim, f = m->ffn;
  if (m->head != nullptr && !linear_ok(*m->head, d, m->vocab)) return TC_ERR_BAD_SIZE;
  for (int64_t i = 0; i < m->n_layers; ++i) {
    const tc_decode_layer& l = m->layers[i];
    if (bad_layer != nullptr) *bad_layer = i;
    if (l.attn_norm == nullptr || l.mlp_norm == nullptr || l.k_cache == nullptr || l.v_cache == nullptr) {
      return TC_ERR_NULL_POINTER;
    }
    const bool qkv = m->qkv_fused ? linear_ok(l.q, d, q + 2 * kv, true)
                                  : linear_ok(l.q, d, q, true) && linear_ok(l.k, d, kv, true) &&
                                        linear_ok(l.v, d, kv, true);
    const bool mlp = gated ? linear_ok(l.gate, d, f, true) && linear_ok(l.up, d, f, true) : linear_ok(l.up, d, f);
    if (!qkv || !mlp || !linear_ok(l.o, q, d) || !linear_ok(l.down, f, d)) return TC_ERR_BAD_SIZE;
  }
  if (bad_layer != nullptr) *bad_layer = -1;
  return TC_OK;
}

extern "C" int tc_decode_step_cpu(const tc_decode_model* m, int64_t token, int64_t pos, float* out,
                                  int num_threads) {
  if (m == nullptr || out == nullptr) return TC_ERR_NULL_POINTER;
  if (token < 0 || token >= m->vocab || pos < 0 || pos >= m->max_len) return TC_ERR_BAD_ARGUMENT;
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  const int64_t d = m->d, hd = m->head_dim, heads = m->n_heads, kv_heads = m->n_kv_heads, len = m->max_len;
  const int64_t group = heads / kv_heads, f = m->ffn;
  float* x = m->scratch;
  float* xn = x + d;
  float* q = xn + d;  // q, k, v adjacent: a fused q/k/v projection writes all three at once
  float* k = q + heads * hd;
  float* v = k + kv_heads * hd;
  float* att = v + kv_heads * hd;
  float* scores = att + heads * hd;
  float* gate = scores + heads * len;
  float* up = gate + f;
  float* rotated = up + f;
  const bool rotate = m->rope_cos != nullptr;
  const float* cos = rotate ? m->rope_cos + pos * hd : nullptr;
  const float* sin = rotate ? m->rope_sin + pos * hd : nullptr;
  const int64_t first = m->sliding_window > 0 && pos >= m->sliding_window ? pos - m->sliding_window + 1 : 0;
  const bool parallel = heads * (pos - first + 1) * hd * 2 >= kParallelAttentionWork && threads > 1;

  std::memcpy(x, m->embed + token * d, sizeof(float) * d);
  if (m->pos_embed != nullptr) {
    for (int64_t i = 0; i < d; ++i) x[i] += m->pos_embed[pos * d + i];
  }
  int st = TC_OK;
  for (int64_t layer = 0; layer < m->n_layers && st == TC_OK; ++layer) {
    const tc_decode_layer& l = m->layers[layer];
    norm(m, x, l.attn_norm, l.attn_norm_bias, xn);
    {
      const tc_decode_linear* qkv[3] = {&l.q, &l.k, &l.v};
      float* out_qkv[3] = {q, k, v};
      st = run_linears(qkv, out_qkv, m->qkv_fused ? 1 : 3, xn, threads);
    }
    if (st != TC_OK) break;
    if (rotate) {
      rotary(q, heads, hd, cos, sin);
      rotary(k, kv_heads, hd, cos, sin);
    }
    for (int64_t h = 0; h < kv_heads; ++h) {
      std::memcpy(l.k_cache + (h * len + pos) * hd, k + h * hd, sizeof(float) * hd);
      std::memcpy(l.v_cache + (h * len + pos) * hd, v + h * hd, sizeof(float) * hd);
    }
#pragma omp parallel for num_threads(threads) if (parallel) schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t c = (h / group) * len * hd;
      attend_one_head(q + h * hd, l.k_cache + c, l.v_cache + c, first, pos, hd, m->attn_scale, scores + h * len,
                      att + h * hd);
    }
    st = run_linear(l.o, att, xn, rotated, threads);
    if (st != TC_OK) break;
    for (int64_t i = 0; i < d; ++i) x[i] += xn[i];
    norm(m, x, l.mlp_norm, l.mlp_norm_bias, xn);
    if (m->mlp_type == TC_DECODE_MLP_SILU_GATED) {
      const tc_decode_linear* gate_up[2] = {&l.gate, &l.up};
      float* out_gate_up[2] = {gate, up};
      st = run_linears(gate_up, out_gate_up, 2, xn, threads);
    } else {  // a plain MLP: its one input projection writes the activation's buffer
      st = run_linear(l.up, xn, gate, rotated, threads);
    }
    if (st != TC_OK) break;
    activate(m->mlp_type, gate, up, f);
    st = run_linear(l.down, gate, xn, rotated, threads);
    if (st != TC_OK) break;
    for (int64_t i = 0; i < d; ++i) x[i] += xn[i];
  }
  if (st != TC_OK) return st;
  if (m->head == nullptr) {
    norm(m, x, m->final_norm, m->final_norm_bias, out);
    return TC_OK;
  }
  norm(m, x, m->final_norm, m->final_norm_bias, xn);
  return run_linear(*m->head, xn, out, rotated, threads);
}
