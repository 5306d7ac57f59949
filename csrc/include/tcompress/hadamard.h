/* Fast Walsh-Hadamard transform of rows of length n = k * 2^m.
 *
 * For every row r:   out[r, :] = scale * x[r, :] @ (H_k (x) H_{2^m})
 * where H_{2^m} is the Sylvester Hadamard matrix and H_k the k x k +-1 matrix given in `hk` (row-major fp32;
 * NULL when k == 1). Viewing a row as a k x 2^m matrix Z (element a*2^m + b is Z[a, b]), the transform is an
 * FWHT along each of the k segments followed by Y[c, b] = sum_a hk[a*k + c] * Z[a, b]. Passing the transposed
 * hk gives the transform by the transposed matrix (its inverse up to scale).
 *
 * Elements of a row are contiguous; row r starts r * row_stride elements after row 0. `out == x` with equal
 * strides transforms in place; any other overlap between x and out is rejected. Arithmetic is fp32. */
#ifndef TCOMPRESS_HADAMARD_H
#define TCOMPRESS_HADAMARD_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest supported k: the dense k x k part costs k multiply-adds per element. */
#define TC_HADAMARD_MAX_K 256

/* CPU, on the variant chosen by tc_isa_set() / at load. num_threads <= 0 uses the OpenMP default.
 * Returns a tc_status. */
int tc_hadamard_cpu(const void* x, void* out, int64_t rows, int64_t n, int64_t x_row_stride,
                    int64_t out_row_stride, int dtype, const float* hk, int64_t k, float scale, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_HADAMARD_H */
