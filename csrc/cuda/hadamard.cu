// CUDA Hadamard transform of rows of length n = k * p (p = 2^m): out[r] = scale * x[r] @ kron(H_k, H_p).
//
// A block holds R whole rows (R = max(1, kRowElems / n)) in shared memory as fp32:
//   1. load + convert (coalesced: consecutive threads read consecutive elements);
//   2. log2(p) butterfly stages of each k-segment, three at a time: a thread takes 8 elements at stride s,
//      does three stages in registers and writes them back, so a row needs ceil(log2(p) / 3) barriers
//      instead of log2(p). Consecutive threads take consecutive j, so shared-memory accesses are conflict-free;
//   3. k == 1: the last pass scales, converts and stores straight to global memory. k > 1: the dense part
//      Y[c, b] = sum_a hk[a, c] * Z[a, b]; a thread owns one column b and kC outputs c, reading hk through the
//      read-only cache (every lane of a warp reads the same entry: a broadcast).
// The whole row is in shared memory before anything is written, so out == x (in place) is safe.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../common/hadamard_check.h"
#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/hadamard_cuda.h"

namespace tcompress {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowElems = 2048;  // rows shorter than this share a block
constexpr int kC = 4;                // outputs of the dense k-part per thread and pass

// One radix-RADIX pass (log2(RADIX) stages at element strides s, 2s, 4s) over every segment of length p of
// the `total` elements in shared memory. EMIT: scale, convert and store to global instead of shared memory.
template <typename T, int RADIX, bool EMIT>
__device__ void radix_pass(float* z, int64_t total, int64_t p, int64_t s, T* out, int64_t n, int64_t out_row_stride,
                           int64_t row0, int64_t rows, float scale) {
  const int64_t groups = total / RADIX;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    // g -> (segment, base, j): within a segment, groups of RADIX*s elements, each holding s butterflies.
    const int64_t per_seg = p / RADIX;
    const int64_t seg = g / per_seg;
    const int64_t within = g - seg * per_seg;
    const int64_t base = (within / s) * (RADIX * s);
    const int64_t j = within % s;
    const int64_t first = seg * p + base + j;
    float a[RADIX];
#pragma unroll
    for (int r = 0; r < RADIX; ++r) a[r] = z[first + r * s];
#pragma unroll
    for (int h = 1; h < RADIX; h *= 2) {
#pragma unroll
      for (int r = 0; r < RADIX; ++r) {
        if ((r & h) == 0) {
          const float u = a[r], v = a[r + h];
          a[r] = u + v;
          a[r + h] = u - v;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RADIX; ++r) {
      const int64_t e = first + r * s;
      if constexpr (EMIT) {
        const int64_t row = e / n;
        if (row0 + row < rows) out[(row0 + row) * out_row_stride + (e - row * n)] = from_float<T>(a[r] * scale);
      } else {
        z[e] = a[r];
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) hadamard_kernel(const T* x, T* out, int64_t rows, int64_t n,
                                                            int64_t k, int64_t p, int64_t rows_per_block,
                                                            int64_t x_row_stride, int64_t out_row_stride,
                                                            const float* __restrict__ hk, float scale) {
  extern __shared__ float z[];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t block_rows = min(rows_per_block, rows - row0);
  const int64_t total = block_rows * n;

  for (int64_t e = threadIdx.x; e < total; e += blockDim.x) {
    const int64_t row = e / n;
    z[e] = to_float<T>(x[(row0 + row) * x_row_stride + (e - row * n)]);
  }
  __syncthreads();

  // Segments of length p: rows are k segments each, so the segment index runs over all block rows at once.
  int remaining = 0;
  while ((int64_t(1) << remaining) < p) ++remaining;
  const bool emit = k == 1;
  int64_t s = 1;
  if (remaining == 0 && emit) {
    for (int64_t e = threadIdx.x; e < total; e += blockDim.x) {
      const int64_t row = e / n;
      out[(row0 + row) * out_row_stride + (e - row * n)] = from_float<T>(z[e] * scale);
    }
    return;
  }
  while (remaining > 0) {
    const int radix_log = remaining >= 3 ? 3 : remaining;
    const bool last = remaining == radix_log;
    if (emit && last) {
      if (radix_log == 3) radix_pass<T, 8, true>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
      if (radix_log == 2) radix_pass<T, 4, true>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
      if (radix_log == 1) radix_pass<T, 2, true>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
      return;
    }
    if (radix_log == 3) radix_pass<T, 8, false>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
    if (radix_log == 2) radix_pass<T, 4, false>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
    if (radix_log == 1) radix_pass<T, 2, false>(z, total, p, s, out, n, out_row_stride, row0, rows, scale);
    __syncthreads();
    s <<= radix_log;
    remaining -= radix_log;
  }

  // Dense k-part. Work items (row, c-chunk, b); b fastest so that stores are coalesced.
  const int64_t chunks = (k + kC - 1) / kC;
  const int64_t items = block_rows * chunks * p;
  for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
    const int64_t b = it % p;
    const int64_t rc = it / p;
    const int64_t chunk = rc % chunks;
    const int64_t row = rc / chunks;
    const int64_t c0 = chunk * kC;
    const float* zr = z + row * n + b;
    float acc[kC];
#pragma unroll
    for (int c = 0; c < kC; ++c) acc[c] = 0.0f;
    for (int64_t a = 0; a < k; ++a) {
      const float za = zr[a * p];
      const float* h = hk + a * k + c0;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        if (c0 + c < k) acc[c] = fmaf(__ldg(h + c), za, acc[c]);
      }
    }
    T* o = out + (row0 + row) * out_row_stride + b;
#pragma unroll
    for (int c = 0; c < kC; ++c) {
      if (c0 + c < k) o[(c0 + c) * p] = from_float<T>(acc[c] * scale);
    }
  }
}

template <typename T>
int launch(const void* x, void* out, int64_t rows, int64_t n, int64_t k, int64_t x_row_stride, int64_t out_row_stride,
           const float* hk, float scale, cudaStream_t stream, int64_t smem_limit) {
  const int64_t rows_per_block = n >= kRowElems ? 1 : kRowElems / n;
  const int64_t smem = rows_per_block * n * static_cast<int64_t>(sizeof(float));
  if (smem > smem_limit) return TC_ERR_BAD_SIZE;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return TC_ERR_BAD_SIZE;
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(hadamard_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem));
    if (err != cudaSuccess) return cuda_fail(err, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  }
  hadamard_kernel<T><<<static_cast<unsigned>(blocks), kThreads, static_cast<size_t>(smem), stream>>>(
      static_cast<const T*>(x), static_cast<T*>(out), rows, n, k, n / k, rows_per_block, x_row_stride, out_row_stride,
      hk, scale);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return cuda_fail(err, "hadamard_kernel launch");
  return TC_OK;
}

}  // namespace
}  // namespace tcompress

extern "C" int64_t tc_hadamard_max_n_cuda(int device) {
  int smem = 0;
  if (cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return smem / static_cast<int64_t>(sizeof(float));
}

extern "C" int tc_hadamard_cuda(const void* x, void* out, int64_t rows, int64_t n, int64_t x_row_stride,
                                int64_t out_row_stride, int dtype, const float* hk, int64_t k, float scale, int device,
                                void* stream) {
  int status = tcompress::check_hadamard_args(x, out, rows, n, x_row_stride, out_row_stride, dtype, hk, k, scale,
                                              /*hk_readable=*/false);
  if (status != TC_OK || rows == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  // Run on `device`, and leave the caller's current device as it was (see device_guard.h).
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const int64_t smem_limit = tc_hadamard_max_n_cuda(device) * static_cast<int64_t>(sizeof(float));
  const int64_t xs = rows > 1 ? x_row_stride : n;
  const int64_t os = rows > 1 ? out_row_stride : n;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TC_FLOAT32:
      return tcompress::launch<float>(x, out, rows, n, k, xs, os, k > 1 ? hk : nullptr, scale, s, smem_limit);
    case TC_FLOAT16:
      return tcompress::launch<__half>(x, out, rows, n, k, xs, os, k > 1 ? hk : nullptr, scale, s, smem_limit);
    case TC_BFLOAT16:
      return tcompress::launch<__nv_bfloat16>(x, out, rows, n, k, xs, os, k > 1 ? hk : nullptr, scale, s,
                                              smem_limit);
    default: return TC_ERR_BAD_DTYPE;
  }
}
