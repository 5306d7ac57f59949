// tc_linear_block_cpu: re-checks every argument (the Python layer checked them too, but native code never trusts
// its caller), then runs the linear_block kernel of the ISA variant in use (active_kernels()).
#include <omp.h>

#include "../common/linear_block_check.h"
#include "kernel_table.h"
#include "tcompress/linear_block.h"

extern "C" int tc_linear_block_cpu(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride,
                                   const void* U, const void* V, int factor_dtype, int64_t r, const float* u_scale,
                                   const float* v_scale, const void* b, int b_dtype, const void* mu, int mu_dtype,
                                   void* y, int64_t y_row_stride, int num_threads) {
  const int status = tcompress::check_linear_block_args(x, x_dtype, M, d, x_row_stride, U, V, factor_dtype, r,
                                                        u_scale, v_scale, b, b_dtype, mu, mu_dtype, y, y_row_stride);
  if (status != TC_OK || M == 0) return status;
  tcompress::LinearBlockArgs a;
  a.x = x;
  a.x_dtype = x_dtype;
  a.M = M;
  a.d = d;
  a.r = r;
  a.x_row_stride = M > 1 ? x_row_stride : d;
  a.U = U;
  a.V = V;
  a.factor_dtype = factor_dtype;
  a.u_scale = u_scale;
  a.v_scale = v_scale;
  a.b = b;
  a.b_dtype = b_dtype;
  a.mu = mu;
  a.mu_dtype = mu_dtype;
  a.y = y;
  a.y_row_stride = M > 1 ? y_row_stride : d;
  a.num_threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  return tcompress::active_kernels().linear_block(a);
}
