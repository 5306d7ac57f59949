#include "hadamard_check.h"

#include <math.h>

#include "tcompress/hadamard.h"
#include "tcompress/status.h"

namespace tcompress {

namespace {

bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Byte range [first, last) touched by `rows` rows of n elements, `stride` elements apart.
void byte_range(const void* base, int64_t rows, int64_t n, int64_t stride, int esize, uintptr_t* first,
                uintptr_t* last) {
  *first = reinterpret_cast<uintptr_t>(base);
  *last = *first + static_cast<uintptr_t>(((rows - 1) * stride + n) * esize);
}

}  // namespace

int check_hadamard_args(const void* x, const void* out, int64_t rows, int64_t n, int64_t x_row_stride,
                        int64_t out_row_stride, int dtype, const float* hk, int64_t k, float scale, bool hk_readable) {
  const int esize = tc_dtype_size(dtype);
  if (esize == 0) return TC_ERR_BAD_DTYPE;
  if (rows < 0 || n < 1 || k < 1 || k > TC_HADAMARD_MAX_K || n % k != 0 || !is_pow2(n / k)) return TC_ERR_BAD_SIZE;
  if (rows == 0) return TC_OK;
  if (x == nullptr || out == nullptr || (k > 1 && hk == nullptr)) return TC_ERR_NULL_POINTER;
  if (rows > 1 && (x_row_stride < n || out_row_stride < n)) return TC_ERR_BAD_STRIDE;
  if (!isfinite(scale)) return TC_ERR_BAD_ARGUMENT;
  for (int64_t i = 0; hk_readable && k > 1 && i < k * k; ++i) {
    if (hk[i] != 1.0f && hk[i] != -1.0f) return TC_ERR_BAD_ARGUMENT;
  }
  // In place means the very same rows; any other overlap would read elements already overwritten.
  if (x == out) {
    if (rows > 1 && x_row_stride != out_row_stride) return TC_ERR_BAD_ARGUMENT;
  } else {
    uintptr_t x0, x1, o0, o1;
    byte_range(x, rows, n, x_row_stride, esize, &x0, &x1);
    byte_range(out, rows, n, out_row_stride, esize, &o0, &o1);
    if (x0 < o1 && o0 < x1) return TC_ERR_BAD_ARGUMENT;
  }
  return TC_OK;
}

}  // namespace tcompress
