// The CPU entry points of the exit_gate family (tcompress/exit_gate.h): every argument checked again (the Python
// layer checked them too, but native code never trusts its caller), then the variant in use (active_kernels()) runs.
#include <math.h>

#include "kernel_table.h"
#include "tcompress/exit_gate.h"

namespace tcompress {
namespace {

int check_common(int dtype, int criterion, float threshold) {
  if (tc_dtype_size(dtype) == 0) return TC_ERR_BAD_DTYPE;
  if (criterion < TC_EXIT_MAX_PROB || criterion > TC_EXIT_ENTROPY) return TC_ERR_BAD_ARGUMENT;
  if (isnan(threshold)) return TC_ERR_BAD_ARGUMENT;
  return TC_OK;
}

}  // namespace
}  // namespace tcompress

extern "C" int tc_exit_gate_cpu(const void* logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride,
                                int criterion, float threshold, float* confidence, uint8_t* exit_mask,
                                int64_t* argmax, int64_t* bad_row, int* bad_kind, int num_threads) {
  const int status = tcompress::check_common(dtype, criterion, threshold);
  if (status != TC_OK) return status;
  if (rows < 0 || vocab < 1) return TC_ERR_BAD_SIZE;
  if (rows > 1 && row_stride < vocab) return TC_ERR_BAD_STRIDE;
  if (bad_row == nullptr || bad_kind == nullptr) return TC_ERR_NULL_POINTER;
  *bad_row = -1;
  *bad_kind = TC_EXIT_BAD_NONE;
  if (rows == 0) return TC_OK;
  if (logits == nullptr || confidence == nullptr || exit_mask == nullptr) return TC_ERR_NULL_POINTER;
  tcompress::ExitGateArgs a;
  a.logits = logits;
  a.dtype = dtype;
  a.rows = rows;
  a.vocab = vocab;
  a.row_stride = rows > 1 ? row_stride : vocab;
  a.criterion = criterion;
  a.threshold = threshold;
  a.confidence = confidence;
  a.exit_mask = exit_mask;
  a.argmax = argmax;
  a.bad_row = bad_row;
  a.bad_kind = bad_kind;
  a.num_threads = num_threads;
  return tcompress::active_kernels().exit_gate(a);
}

extern "C" int tc_exit_gate_head_cpu(const float* hidden, const void* weight, int dtype, int64_t vocab, int64_t d,
                                     int64_t weight_row_stride, const float* bias, int criterion, float threshold,
                                     float* confidence, uint8_t* exit_mask, int64_t* argmax, int* bad_kind,
                                     int num_threads) {
  const int status = tcompress::check_common(dtype, criterion, threshold);
  if (status != TC_OK) return status;
  if (vocab < 1 || d < 1) return TC_ERR_BAD_SIZE;
  if (vocab > 1 && weight_row_stride < d) return TC_ERR_BAD_STRIDE;
  if (hidden == nullptr || weight == nullptr || confidence == nullptr || exit_mask == nullptr || argmax == nullptr ||
      bad_kind == nullptr)
    return TC_ERR_NULL_POINTER;
  *bad_kind = TC_EXIT_BAD_NONE;
  tcompress::ExitGateHeadArgs a;
  a.hidden = hidden;
  a.weight = weight;
  a.dtype = dtype;
  a.vocab = vocab;
  a.d = d;
  a.weight_row_stride = vocab > 1 ? weight_row_stride : d;
  a.bias = bias;
  a.criterion = criterion;
  a.threshold = threshold;
  a.confidence = confidence;
  a.exit_mask = exit_mask;
  a.argmax = argmax;
  a.bad_kind = bad_kind;
  a.num_threads = num_threads;
  return tcompress::active_kernels().exit_gate_head(a);
}
