// The CPU entry points of the quant family (tcompress/quant.h): every argument checked again (the Python layer
// checked them too, but native code never trusts its caller), then the variant in use (active_kernels()) runs.
#include "../common/quant_check.h"
#include "kernel_table.h"
#include "tcompress/quant.h"

extern "C" int tc_quantize_cpu(const void* w, int w_dtype, int64_t out_features, int64_t in_features,
                               int64_t w_row_stride, int bits, int64_t group_size, int symmetric, uint8_t* codes,
                               void* scales, int scale_dtype, uint8_t* zeros, int num_threads) {
  namespace qc = tcompress::quant_check;
  const int status = qc::check_quantize(w, w_dtype, out_features, in_features, w_row_stride, bits, group_size,
                                        symmetric, codes, scales, scale_dtype, zeros);
  if (status != TC_OK || out_features == 0) return status;
  tcompress::QuantizeArgs a;
  a.w = w;
  a.w_dtype = w_dtype;
  a.rows = out_features;
  a.n = in_features;
  a.w_row_stride = qc::effective_stride(out_features, w_row_stride, in_features);
  a.group = qc::group_length(in_features, group_size);
  a.bits = bits;
  a.symmetric = symmetric != 0;
  a.codes = codes;
  a.scales = scales;
  a.scale_dtype = scale_dtype;
  a.zeros = symmetric ? nullptr : zeros;
  a.num_threads = num_threads;
  return tcompress::active_kernels().quantize(a);
}

namespace {

int pack_or_unpack(bool pack, const uint8_t* codes, const uint8_t* packed, int64_t rows, int64_t n,
                   int64_t codes_row_stride, int64_t packed_row_stride, int num_threads) {
  namespace qc = tcompress::quant_check;
  const int status = qc::check_pack(codes, packed, rows, n, codes_row_stride, packed_row_stride);
  if (status != TC_OK || rows == 0 || n == 0) return status;
  // PackArgs names the arrays by role; the kernel that runs decides which one is written.
  tcompress::PackArgs a;
  a.codes = const_cast<uint8_t*>(codes);
  a.packed = const_cast<uint8_t*>(packed);
  a.rows = rows;
  a.n = n;
  a.codes_row_stride = qc::effective_stride(rows, codes_row_stride, n);
  a.packed_row_stride = qc::effective_stride(rows, packed_row_stride, n / 2);
  a.num_threads = num_threads;
  const tcompress::KernelTable& k = tcompress::active_kernels();
  return pack ? k.pack_int4(a) : k.unpack_int4(a);
}

}  // namespace

extern "C" int tc_pack_int4_cpu(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n,
                                int64_t codes_row_stride, int64_t packed_row_stride, int num_threads) {
  return pack_or_unpack(true, codes, packed, rows, n, codes_row_stride, packed_row_stride, num_threads);
}

extern "C" int tc_unpack_int4_cpu(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n,
                                  int64_t packed_row_stride, int64_t codes_row_stride, int num_threads) {
  return pack_or_unpack(false, codes, packed, rows, n, codes_row_stride, packed_row_stride, num_threads);
}

extern "C" int tc_dequantize_cpu(const uint8_t* codes, int codes_format, int64_t out_features, int64_t in_features,
                                 int64_t codes_row_stride, const void* scales, int scale_dtype, const uint8_t* zeros,
                                 int bits, int64_t group_size, void* out, int out_dtype, int64_t out_row_stride,
                                 int num_threads) {
  namespace qc = tcompress::quant_check;
  const int status = qc::check_dequantize(codes, codes_format, out_features, in_features, codes_row_stride, scales,
                                          scale_dtype, zeros, bits, group_size, out, out_dtype, out_row_stride);
  if (status != TC_OK || out_features == 0) return status;
  const bool packed = codes_format == TC_CODES_INT4_PACKED;
  tcompress::DequantizeArgs a;
  a.codes = codes;
  a.packed = packed;
  a.rows = out_features;
  a.n = in_features;
  a.codes_row_stride = qc::effective_stride(out_features, codes_row_stride, packed ? in_features / 2 : in_features);
  a.scales = scales;
  a.scale_dtype = scale_dtype;
  a.zeros = zeros;
  a.bits = bits;
  a.group = qc::group_length(in_features, group_size);
  a.out = out;
  a.out_dtype = out_dtype;
  a.out_row_stride = qc::effective_stride(out_features, out_row_stride, in_features);
  a.num_threads = num_threads;
  return tcompress::active_kernels().dequantize(a);
}
