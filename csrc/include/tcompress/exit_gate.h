/* Early-exit gate over logits (CPU): per-row softmax confidence in one pass over the vocabulary, without
 * materialising the softmax.
 *
 * For a row l (vocab entries) with m = max(l), S = sum exp(l - m) and T = sum exp(l - m) * (l - m):
 *   max_prob (TC_EXIT_MAX_PROB) = 1 / S                         exit when confidence >= threshold
 *   margin   (TC_EXIT_MARGIN)   = (1 - exp(l2 - m)) / S         exit when confidence >= threshold
 *                                 (l2 the second largest logit counted with multiplicity: a tie gives 0;
 *                                  with vocab == 1 the second probability is 0 and the margin is 1)
 *   entropy  (TC_EXIT_ENTROPY)  = log S - T / S  (nats)         exit when confidence <  threshold
 * m, S and T are accumulated online: each chunk of the row (at most TC_EXIT_GATE_CHUNK elements, in L1) is read
 * for its maximum and then for exp(l - m), and S, T are rescaled when the maximum grows. exp is a degree-6
 * polynomial after range reduction (relative error ~2e-7 over [-88, 0]); below -88 it is 0, so -inf entries
 * contribute exactly 0. Arithmetic is fp32 whatever the logits' dtype.
 *
 * Rows that have no softmax are errors, never silent exits: a row holding NaN (TC_EXIT_BAD_NAN), +inf
 * (TC_EXIT_BAD_POSINF), or only -inf entries (TC_EXIT_BAD_ALL_NEGINF) makes the call return TC_ERR_NOT_FINITE
 * with *bad_row the first such row and *bad_kind its kind (the outputs then hold unspecified values).
 *
 * Also returns the argmax of every row (the first index of the maximum), when `argmax` is not NULL.
 * Row stride in elements (>= vocab when rows > 1). num_threads <= 0 uses the OpenMP default; with fewer rows
 * than threads the vocabulary of a row is split between threads and the partial statistics merged. */
#ifndef TCOMPRESS_EXIT_GATE_H
#define TCOMPRESS_EXIT_GATE_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TC_EXIT_GATE_CHUNK 1024

enum tc_exit_criterion { TC_EXIT_MAX_PROB = 0, TC_EXIT_MARGIN = 1, TC_EXIT_ENTROPY = 2 };

enum tc_exit_bad_row { TC_EXIT_BAD_NONE = 0, TC_EXIT_BAD_NAN = 1, TC_EXIT_BAD_POSINF = 2, TC_EXIT_BAD_ALL_NEGINF = 3 };

/* logits (rows x vocab, dtype) -> confidence (rows) fp32, exit_mask (rows) 0/1 bytes, argmax (rows) int64 or NULL.
 * Errors: TC_ERR_NULL_POINTER, TC_ERR_BAD_SIZE (rows < 0, vocab < 1), TC_ERR_BAD_STRIDE, TC_ERR_BAD_DTYPE,
 * TC_ERR_BAD_ARGUMENT (unknown criterion, NaN threshold), TC_ERR_NOT_FINITE (see above), TC_ERR_OUT_OF_MEMORY. */
int tc_exit_gate_cpu(const void* logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride, int criterion,
                     float threshold, float* confidence, uint8_t* exit_mask, int64_t* argmax, int64_t* bad_row,
                     int* bad_kind, int num_threads);

/* The head GEMV and the gate together, for one token: logits[v] = dot(weight[v, :], hidden) (+ bias[v]) are
 * consumed into the online statistics chunk by chunk and never stored. hidden (d) fp32; weight (vocab x d, dtype,
 * rows weight_row_stride elements apart); bias (vocab) fp32 or NULL. Outputs one confidence, mask byte and argmax
 * (the token an exit emits). The vocabulary is split between threads, whose statistics are merged. Same errors. */
int tc_exit_gate_head_cpu(const float* hidden, const void* weight, int dtype, int64_t vocab, int64_t d,
                          int64_t weight_row_stride, const float* bias, int criterion, float threshold,
                          float* confidence, uint8_t* exit_mask, int64_t* argmax, int* bad_kind, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_EXIT_GATE_H */
