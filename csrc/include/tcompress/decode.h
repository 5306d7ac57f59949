/* One decode step of a pre-norm decoder at batch 1, in one native call: the token's embedding row (plus a learned
 * position row when the model has one) through every block (norm, q/k/v, rotary when the model uses it, attention
 * over a KV cache, o, norm, MLP, residual adds) and the final norm, then the head when the model has a native one.
 * Llama-family models (Llama, Mistral, Qwen2, SmolLM2: RMSNorm, rotary, SiLU-gated MLP) and GPT-2 (LayerNorm with
 * bias, learned positions, fused q/k/v, GELU MLP).
 *
 * Activations, norms, rotary tables and the KV cache are fp32; every projection is a packed int4/int8 weight in
 * the format of tcompress/qlinear.h, run by tc_qlinear_cpu (act_bits 0) or tc_qlinear_a8_cpu (act_bits 8 or 4).
 * The projections that read their own input (o, down, the head) may transform it online first (tcompress/hadamard.h),
 * as a rotated model's QuantLinear(online_hadamard=True) does.
 * The arithmetic follows transformers' modules: RMSNorm w * (x * rsqrt(mean(x^2) + eps)); LayerNorm
 * w * (x - mean) * rsqrt(var + eps) + b (biased variance); rotary
 * x * cos + rotate_half(x) * sin with rotate_half = (-x[h/2:], x[:h/2]); grouped-query attention (query head h
 * reads key/value head h / (n_heads / n_kv_heads)) with softmax(q k^T * attn_scale) over positions
 * max(0, pos - sliding_window + 1) .. pos (all of them when sliding_window == 0); MLP down(SiLU(gate) * up) or
 * down(GELU(up)) (tanh approximation or erf).
 *
 * Projections that read the same input (q, k, v; gate, up) run in one parallel region, their rows split evenly over
 * the threads, each slice on the one-thread kernel: four fork/joins per block, and the small k and v share the
 * threads. q, k, v may also be one fused linear (`qkv_fused`: rows q then k then v, GPT-2's c_attn).
 *
 * The caller owns every buffer; nothing is allocated here. Returns a tc_status. */
#ifndef TCOMPRESS_DECODE_H
#define TCOMPRESS_DECODE_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A packed projection: y (N) = x (K) @ dequant(W)^T + bias, as tc_qlinear_cpu's weight arguments. */
typedef struct tc_decode_linear {
  const uint8_t* qweight;
  int64_t K, N;
  int bits;
  const void* scales;
  int scale_dtype;
  const uint8_t* zeros;   /* NULL: symmetric */
  int64_t group_size;     /* 0: per output channel */
  const void* bias;       /* NULL: none */
  int bias_dtype;
  int act_bits;           /* 0: fp32 activations; 8 or 4: integer activations (tc_qlinear_a8_cpu) */
  int act_per_group;      /* with act_bits: 1 = one activation scale per weight group, 0 = per token */
  int online_hadamard;    /* 1: x goes through tc_hadamard_cpu(x, hadamard, hadamard_k, hadamard_scale) first */
  const float* hadamard;  /* the hadamard_k x hadamard_k base matrix (NULL when hadamard_k == 1) */
  int64_t hadamard_k;
  float hadamard_scale;
} tc_decode_linear;

enum tc_decode_norm { TC_DECODE_RMSNORM = 0, TC_DECODE_LAYERNORM = 1 };
enum tc_decode_mlp { TC_DECODE_MLP_SILU_GATED = 0, TC_DECODE_MLP_GELU_TANH = 1, TC_DECODE_MLP_GELU_ERF = 2 };

typedef struct tc_decode_layer {
  const float* attn_norm;  /* (d) */
  const float* mlp_norm;   /* (d) */
  const float* attn_norm_bias;  /* (d) LayerNorm bias, or NULL */
  const float* mlp_norm_bias;
  tc_decode_linear q, k, v, o, gate, up, down;  /* q alone when qkv_fused; no gate for a GELU MLP */
  float* k_cache;          /* (n_kv_heads, max_len, head_dim), rotary applied */
  float* v_cache;          /* (n_kv_heads, max_len, head_dim) */
} tc_decode_layer;

typedef struct tc_decode_model {
  int64_t n_layers, d, n_heads, n_kv_heads, head_dim, ffn, max_len, vocab;
  int64_t sliding_window;  /* 0: none */
  float eps, attn_scale;
  int qkv_fused;
  int norm_type;           /* tc_decode_norm */
  int mlp_type;            /* tc_decode_mlp */
  const float* embed;      /* (vocab, d) */
  const float* pos_embed;  /* (max_len, d) learned positions, or NULL */
  const float* rope_cos;   /* (max_len, head_dim), or NULL: no rotary */
  const float* rope_sin;   /* (max_len, head_dim), or NULL */
  const float* final_norm; /* (d) */
  const float* final_norm_bias; /* (d), or NULL */
  const tc_decode_layer* layers;
  const tc_decode_linear* head;  /* NULL: the step writes the final normed hidden state (d) instead of logits */
  float* scratch;          /* tc_decode_scratch_floats(model) floats */
} tc_decode_model;

/* Floats of scratch one step needs. */
int64_t tc_decode_scratch_floats(const tc_decode_model* m);

/* Checks the model description once (sizes, pointers, that every projection has the shape its place needs).
 * Returns TC_OK or the first problem's status; `bad_layer` (may be NULL) gets the layer index, -1 outside layers. */
int tc_decode_check(const tc_decode_model* m, int64_t* bad_layer);

/* token in [0, vocab), 0 <= pos < max_len; caches hold positions < pos. Writes this position's key and value into
 * the caches and out: logits (vocab) with a head, else the final normed hidden state (d). No argument checks
 * beyond token and pos: call tc_decode_check once on the model first. */
int tc_decode_step_cpu(const tc_decode_model* m, int64_t token, int64_t pos, float* out, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_DECODE_H */
