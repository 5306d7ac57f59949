// CUDA qlinear_a8 (contract: tcompress/qlinear_a8.h, tcompress/qlinear_a8_cuda.h). NEVER RUN: written and compiled
// on a machine without a GPU; the tests in tests/ops/test_qlinear_a8.py exercise it where a device exists.
//
// 1. quantize_rows: one block per row of x: max |x| by a block reduction, scale = amax / qmax (1 for zeros), codes
//    = clamp(rint(x / scale)) (round half to even, as torch.round), written as int8 (M, K) to scratch.
// 2. a8_gemm: 64 x 64 output tiles per block of 256 threads (4 x 4 outputs per thread). Each weight group is
//    walked in steps of 32 columns; a step stages the int8 codes of 64 rows and the weight codes of 64 columns,
//    re-centred to int8 as u - 128, in shared memory (columns past the group's end as 0), and every thread runs
//    dp4a (4 int8 x int8 products summed into int32) over them. At the group's end the exact accumulator is
//    sum (u - 128) a + (128 - z) sum a = sum (u - z) a, converted to fp32 and multiplied by the group scale.
//    Same formula and order as the CPU kernels. (dp4a only; an int8 tensor-core mma.sync path is not written.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../common/qlinear_check.h"
#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/qlinear_a8.h"
#include "tcompress/qlinear_a8_cuda.h"

namespace tcompress {
namespace {

constexpr int kQuantThreads = 256;
constexpr int kTile = 64, kStep = 32, kGemmThreads = 256;

struct A8Params {
  const void* x;
  int64_t M, K, N, xs, ys;
  const uint8_t* qweight;
  int64_t row_bytes;
  const void* scales;
  int scale_dtype;
  const uint8_t* zeros;
  int zsym;
  int64_t g, groups;
  const void* bias;
  int bias_dtype;
  void* y;
  const int8_t* codes;  // (M, K) scratch
  const float* sx;      // (M) scratch
};

__device__ __forceinline__ float load_any(const void* p, int64_t i, int dtype) {
  switch (dtype) {
    case TC_FLOAT16: return __half2float(static_cast<const __half*>(p)[i]);
    case TC_BFLOAT16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

template <typename XT>
__global__ void quantize_rows(const XT* x, int64_t K, int64_t xs, int qmax, int8_t* codes, float* sx) {
  __shared__ float partial[kQuantThreads];
  const int64_t m = blockIdx.x;
  const XT* row = x + m * xs;
  float amax = 0.0f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) amax = fmaxf(amax, fabsf(to_float(row[k])));
  partial[threadIdx.x] = amax;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] = fmaxf(partial[threadIdx.x], partial[threadIdx.x + half]);
    __syncthreads();
  }
  amax = partial[0];
  const float scale = amax > 0.0f ? __fdiv_rn(amax, static_cast<float>(qmax)) : 1.0f;
  const float q = static_cast<float>(qmax);
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float v = rintf(__fdiv_rn(to_float(row[k]), scale));
    codes[m * K + k] = static_cast<int8_t>(fminf(q, fmaxf(-q, v)));
  }
  if (threadIdx.x == 0) sx[m] = scale;
}

template <int BITS>
__device__ __forceinline__ int code_at(const uint8_t* wrow, int64_t c) {
  if constexpr (BITS == 8) {
    return wrow[c];
  } else {
    return (wrow[c >> 1] >> ((c & 1) * 4)) & 0xF;
  }
}

template <typename XT, int BITS>
__global__ void __launch_bounds__(kGemmThreads) a8_gemm(A8Params p) {
  // Words of 4 int8 codes; one padding word per row against bank conflicts.
  __shared__ int a_tile[kTile][kStep / 4 + 1];
  __shared__ int w_tile[kTile][kStep / 4 + 1];
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float c[4][4] = {};
  for (int64_t grp = 0; grp < p.groups; ++grp) {
    const int64_t k_begin = grp * p.g, k_end = k_begin + p.g;
    int acc[4][4] = {}, asum[4] = {};
    for (int64_t k0 = k_begin; k0 < k_end; k0 += kStep) {
      // Stage: each thread fills 2 words (8 codes) of each tile.
      for (int w = tid; w < kTile * kStep / 4; w += kGemmThreads) {
        const int r = w / (kStep / 4), q = w % (kStep / 4);
        const int64_t m = m0 + r, n = n0 + r;
        unsigned a_word = 0, w_word = 0;
        for (int b = 0; b < 4; ++b) {
          const int64_t k = k0 + q * 4 + b;
          if (k < k_end) {
            if (m < p.M) a_word |= static_cast<unsigned>(static_cast<uint8_t>(p.codes[m * p.K + k])) << (8 * b);
            if (n < p.N) {
              const int u = code_at<BITS>(p.qweight + n * p.row_bytes, k);
              w_word |= static_cast<unsigned>(static_cast<uint8_t>(static_cast<int8_t>(u - 128))) << (8 * b);
            }
          }
        }
        a_tile[r][q] = static_cast<int>(a_word);
        w_tile[r][q] = static_cast<int>(w_word);
      }
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kStep / 4; ++q) {
        int a[4], w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a[i] = a_tile[ty * 4 + i][q];
          w[i] = w_tile[tx + 16 * i][q];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          asum[i] = __dp4a(a[i], 0x01010101, asum[i]);
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(a[i], w[j], acc[i][j]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      const int64_t gi = n * p.groups + grp;
      const float s = load_any(p.scales, gi, p.scale_dtype);
      const int z = p.zeros ? p.zeros[gi] : p.zsym;
#pragma unroll
      for (int i = 0; i < 4; ++i) c[i][j] += static_cast<float>(acc[i][j] + (128 - z) * asum[i]) * s;
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= p.M) continue;
    const float sx = p.sx[m];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      float v = c[i][j] * sx;
      if (p.bias) v += load_any(p.bias, n, p.bias_dtype);
      static_cast<XT*>(p.y)[m * p.ys + n] = from_float<XT>(v);
    }
  }
}

template <typename XT>
int launch(A8Params p, int bits, int act_bits, cudaStream_t s) {
  int8_t* codes = nullptr;
  float* sx = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&codes), static_cast<size_t>(p.M * p.K), s);
  if (err != cudaSuccess) return cuda_fail(err, "cudaMallocAsync (qlinear_a8 codes)");
  err = cudaMallocAsync(reinterpret_cast<void**>(&sx), static_cast<size_t>(p.M) * sizeof(float), s);
  if (err != cudaSuccess) {
    cudaFreeAsync(codes, s);
    return cuda_fail(err, "cudaMallocAsync (qlinear_a8 scales)");
  }
  const int qmax = (1 << (act_bits - 1)) - 1;
  quantize_rows<XT><<<static_cast<unsigned>(p.M), kQuantThreads, 0, s>>>(static_cast<const XT*>(p.x), p.K, p.xs,
                                                                         qmax, codes, sx);
  p.codes = codes;
  p.sx = sx;
  const int64_t gy = (p.M + kTile - 1) / kTile, gx = (p.N + kTile - 1) / kTile;
  if (gy <= 65535) {
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    if (bits == 4) {
      a8_gemm<XT, 4><<<grid, kGemmThreads, 0, s>>>(p);
    } else {
      a8_gemm<XT, 8><<<grid, kGemmThreads, 0, s>>>(p);
    }
  }
  err = cudaGetLastError();
  cudaFreeAsync(sx, s);
  cudaFreeAsync(codes, s);
  if (gy > 65535) return TC_ERR_BAD_SIZE;
  return err == cudaSuccess ? TC_OK : cuda_fail(err, "qlinear_a8 kernel launch");
}

}  // namespace
}  // namespace tcompress

extern "C" int tc_qlinear_a8_cuda(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                                  const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                                  const uint8_t* zeros, int64_t group_size, int act_bits, const void* bias,
                                  int bias_dtype, void* y, int64_t y_row_stride, int device, void* stream) {
  const int status = tcompress::check_qlinear_args(x, x_dtype, M, K, x_row_stride, qweight, N, bits, scales,
                                                   scale_dtype, zeros, group_size, bias, bias_dtype, y, y_row_stride);
  if (status != TC_OK) return status;
  if (act_bits != 4 && act_bits != 8) return TC_ERR_BAD_ARGUMENT;
  if ((group_size == 0 ? K : group_size) > TC_QLINEAR_A8_MAX_GROUP) return TC_ERR_BAD_SIZE;
  if (M == 0) return TC_OK;
  if (M > 2147483647 / 2) return TC_ERR_BAD_SIZE;  // one block per row in quantize_rows
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  tcompress::A8Params p{};
  p.x = x;
  p.M = M;
  p.K = K;
  p.N = N;
  p.xs = M > 1 ? x_row_stride : K;
  p.ys = M > 1 ? y_row_stride : N;
  p.qweight = qweight;
  p.row_bytes = bits == 4 ? K / 2 : K;
  p.scales = scales;
  p.scale_dtype = scale_dtype;
  p.zeros = zeros;
  p.zsym = 1 << (bits - 1);
  p.g = group_size == 0 ? K : group_size;
  p.groups = K / p.g;
  p.bias = bias;
  p.bias_dtype = bias_dtype;
  p.y = y;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (x_dtype) {
    case TC_FLOAT32: return tcompress::launch<float>(p, bits, act_bits, s);
    case TC_FLOAT16: return tcompress::launch<__half>(p, bits, act_bits, s);
    case TC_BFLOAT16: return tcompress::launch<__nv_bfloat16>(p, bits, act_bits, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}
