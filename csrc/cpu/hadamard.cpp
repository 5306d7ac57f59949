// tc_hadamard_cpu: re-checks every argument (the Python layer checked them too, but native code never trusts
// its caller), then runs the active ISA variant.
#include "../common/hadamard_check.h"
#include "kernel_table.h"
#include "tcompress/hadamard.h"

extern "C" int tc_hadamard_cpu(const void* x, void* out, int64_t rows, int64_t n, int64_t x_row_stride,
                               int64_t out_row_stride, int dtype, const float* hk, int64_t k, float scale,
                               int num_threads) {
  const int status = tcompress::check_hadamard_args(x, out, rows, n, x_row_stride, out_row_stride, dtype, hk, k,
                                                    scale, /*hk_readable=*/true);
  if (status != TC_OK || rows == 0) return status;

  tcompress::HadamardArgs args;
  args.x = x;
  args.out = out;
  args.rows = rows;
  args.n = n;
  args.k = k;
  args.p = n / k;
  args.x_row_stride = rows > 1 ? x_row_stride : n;
  args.out_row_stride = rows > 1 ? out_row_stride : n;
  args.dtype = dtype;
  args.hk = k > 1 ? hk : nullptr;
  args.scale = scale;
  args.num_threads = num_threads;
  return tcompress::active_kernels().hadamard(args);
}
