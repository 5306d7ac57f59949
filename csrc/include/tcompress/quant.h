/* Round-to-nearest weight quantization, int4 nibble packing and dequantization (CPU).
 *
 * The format (the same as python/tcompress/ops/quantize.py, which holds the pure-torch reference):
 *   - a weight w (out_features x in_features) is cut into groups of `group_size` consecutive columns
 *     (group_size == 0: one group per row, i.e. per output channel); groups = in_features / group_size;
 *   - every group has a scale s (stored as fp32, fp16 or bf16) and a zero point z; codes u are unsigned,
 *     in [0, 2^bits - 1], and dequantize to (u - z) * s in fp32 arithmetic;
 *   - symmetric: s = absmax / qmax with qmax = 2^(bits-1) - 1; z = 2^(bits-1) is implicit (no zeros array);
 *     u = clamp(round(w / s), -qmax - 1, qmax) + z;
 *   - asymmetric: lo = min(min(w), 0), hi = max(max(w), 0), s = (hi - lo) / (2^bits - 1),
 *     z = clamp(round(-lo / s), 0, 2^bits - 1) stored as uint8, u = clamp(round(w / s) + z, 0, 2^bits - 1);
 *   - s is rounded to its storage dtype (round to nearest even) *before* the codes are computed, and a scale
 *     that is 0 after that rounding becomes 1; round() is half-to-even and w / s an IEEE fp32 division, so the
 *     kernels agree bit for bit with the reference;
 *   - int4 packing: byte j of a packed row holds code 2j in its low nibble and code 2j + 1 in its high nibble.
 *
 * Layouts: every array is row-major. Inputs w / codes / packed and the dequantized output may have a row stride
 * (in elements; it must be >= the row length when rows > 1); codes written by tc_quantize_cpu and every scales /
 * zeros array are contiguous (out_features x groups). Inputs and outputs must not overlap.
 *
 * Every entry point re-checks its arguments (the Python layer checked them too) and returns a tc_status:
 *   TC_ERR_NULL_POINTER  a required pointer is NULL (pointers may be NULL only when there is nothing to touch);
 *   TC_ERR_BAD_SIZE      negative sizes, bits not 4 or 8, a group_size that is negative or does not divide
 *                        in_features, an odd n for the int4 layout;
 *   TC_ERR_BAD_STRIDE    a row stride shorter than its row;
 *   TC_ERR_BAD_DTYPE     an unknown dtype or codes-format code;
 *   TC_ERR_BAD_ARGUMENT  overlapping inputs and outputs, zeros given for symmetric quantization (or missing for
 *                        asymmetric), a code above 15 handed to tc_pack_int4_cpu;
 *   TC_ERR_NOT_FINITE    w holds NaN or Inf, or a group's scale overflows its storage dtype (e.g. fp16);
 *   TC_ERR_OUT_OF_MEMORY never (no scratch memory is allocated).
 * After an error the outputs hold unspecified values. num_threads <= 0 uses the OpenMP default. */
#ifndef TCOMPRESS_QUANT_H
#define TCOMPRESS_QUANT_H

#include <stdint.h>

#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How tc_dequantize_* reads its codes. */
enum tc_codes_format {
  TC_CODES_UINT8 = 0,       /* one code per byte: codes (out_features x in_features) */
  TC_CODES_INT4_PACKED = 1  /* two int4 codes per byte: packed (out_features x in_features / 2); bits must be 4 */
};

/* w (out_features x in_features, dtype w_dtype, rows w_row_stride elements apart) ->
 *   codes  (out_features x in_features) uint8,
 *   scales (out_features x groups) of scale_dtype,
 *   zeros  (out_features x groups) uint8: asymmetric only; must be NULL when symmetric != 0.
 * bits: 4 or 8. Codes of 4 bits are stored one per byte (pack them with tc_pack_int4_cpu). */
int tc_quantize_cpu(const void* w, int w_dtype, int64_t out_features, int64_t in_features, int64_t w_row_stride,
                    int bits, int64_t group_size, int symmetric, uint8_t* codes, void* scales, int scale_dtype,
                    uint8_t* zeros, int num_threads);

/* codes (rows x n) uint8, every code in [0, 15], n even -> packed (rows x n / 2) uint8. A code above 15 is an
 * error (TC_ERR_BAD_ARGUMENT), never silently truncated. Row strides in bytes (= elements). */
int tc_pack_int4_cpu(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n, int64_t codes_row_stride,
                     int64_t packed_row_stride, int num_threads);

/* packed (rows x n / 2) uint8 -> codes (rows x n) uint8 in [0, 15]; n (the number of codes per row) even. */
int tc_unpack_int4_cpu(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n, int64_t packed_row_stride,
                       int64_t codes_row_stride, int num_threads);

/* codes in `codes_format` (row stride codes_row_stride bytes), scales (out_features x groups, scale_dtype),
 * zeros (out_features x groups uint8, or NULL: the implicit 2^(bits-1)) ->
 * out (out_features x in_features, out_dtype, rows out_row_stride elements apart) = (u - z) * s rounded once
 * from fp32 to out_dtype. Codes are not range-checked: they are whatever the bytes hold. */
int tc_dequantize_cpu(const uint8_t* codes, int codes_format, int64_t out_features, int64_t in_features,
                      int64_t codes_row_stride, const void* scales, int scale_dtype, const uint8_t* zeros, int bits,
                      int64_t group_size, void* out, int out_dtype, int64_t out_row_stride, int num_threads);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_QUANT_H */
