// CUDA qlinear on packed int4/int8 weights: y = x @ dequant(W)^T + bias (contract: tcompress/qlinear.h).
//
// GEMV (M <= TC_QLINEAR_GEMV_MAX_M): one warp per output row. When a row is a whole number of 16-byte chunks
// (and 16-byte aligned) and a chunk never straddles two groups, each lane streams 16-byte chunks of the packed
// row (128-bit read-only loads: 32 int4 or 16 int8 codes), dequantizes them with the chunk's scale and zero
// point and accumulates against the M rows of x (read through L1: x is small and shared by every warp);
// otherwise lanes take the columns one by one. A warp-shuffle reduction gives the M outputs of the row.
// GEMM (larger M): the 64 x 64 SIMT tile of simt_tile.cuh (256 threads, 4 x 4 outputs per thread), K in steps of
// 32: each step stages an fp32 tile of x and a dequantized fp32 tile of W in shared memory, then runs plain FMAs.
// (No tensor cores yet.) Arithmetic and accumulation are fp32 throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../common/qlinear_check.h"
#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "simt_tile.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/qlinear.h"
#include "tcompress/qlinear_cuda.h"

namespace tcompress {
namespace {

struct QParams {
  const void* x;
  int64_t M, K, N, xs, ys;  // xs / ys: row strides in elements
  const uint8_t* qweight;
  int64_t row_bytes;
  const void* scales;
  int scale_dtype;
  const uint8_t* zeros;  // null: symmetric
  int zsym;              // implicit zero point 2^(bits-1)
  int64_t g, groups;     // g: columns per group (K when per channel)
  const void* bias;      // null: none
  int bias_dtype;
  void* y;
};

__device__ __forceinline__ float load_any(const void* p, int64_t i, int dtype) {
  switch (dtype) {
    case TC_FLOAT16: return __half2float(__ldg(static_cast<const __half*>(p) + i));
    case TC_BFLOAT16: return __bfloat162float(__ldg(static_cast<const __nv_bfloat16*>(p) + i));
    default: return __ldg(static_cast<const float*>(p) + i);
  }
}

template <int BITS>
__device__ __forceinline__ int code_at(const uint8_t* wrow, int64_t c) {
  if constexpr (BITS == 8) {
    return __ldg(wrow + c);
  } else {
    return (__ldg(wrow + (c >> 1)) >> ((c & 1) * 4)) & 0xF;
  }
}

// (scale, zero point) of group j of row n.
__device__ __forceinline__ void group_params(const QParams& p, int64_t n, int64_t j, float& s, float& z) {
  const int64_t i = n * p.groups + j;
  s = load_any(p.scales, i, p.scale_dtype);
  z = p.zeros ? static_cast<float>(__ldg(p.zeros + i)) : static_cast<float>(p.zsym);
}

// ---------------------------------------------------------------------------------------------------------------
// GEMV.
// ---------------------------------------------------------------------------------------------------------------

constexpr int kGemvThreads = 256;  // 8 warps: 8 output rows per block

template <typename XT, int BITS, int M>
__global__ void __launch_bounds__(kGemvThreads) qlinear_gemv(QParams p, bool chunked) {
  const int64_t n = (static_cast<int64_t>(blockIdx.x) * kGemvThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (n >= p.N) return;
  const XT* x = static_cast<const XT*>(p.x);
  const uint8_t* wrow = p.qweight + n * p.row_bytes;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  if (chunked) {
    constexpr int kCols = 16 * 8 / BITS;  // columns per 16-byte chunk
    const int64_t chunks = p.row_bytes / 16;
    const uint4* wv = reinterpret_cast<const uint4*>(wrow);
    for (int64_t ch = lane; ch < chunks; ch += 32) {
      const uint4 w = __ldg(wv + ch);
      const int64_t c0 = ch * kCols;
      float s, z;
      group_params(p, n, c0 / p.g, s, z);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
#pragma unroll
        for (int f = 0; f < 32 / BITS; ++f) {
          const int code = (words[q] >> (f * BITS)) & ((1 << BITS) - 1);
          const float wt = (static_cast<float>(code) - z) * s;
          const int64_t c = c0 + q * (32 / BITS) + f;
#pragma unroll
          for (int m = 0; m < M; ++m) acc[m] = fmaf(wt, to_float(x[m * p.xs + c]), acc[m]);
        }
      }
    }
  } else {
    for (int64_t c = lane; c < p.K; c += 32) {
      float s, z;
      group_params(p, n, c / p.g, s, z);
      const float wt = (static_cast<float>(code_at<BITS>(wrow, c)) - z) * s;
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] = fmaf(wt, to_float(x[m * p.xs + c]), acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
  }
  if (lane == 0) {
    const float b = p.bias ? load_any(p.bias, n, p.bias_dtype) : 0.0f;
    XT* y = static_cast<XT*>(p.y);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m < p.M) y[m * p.ys + n] = from_float<XT>(acc[m] + b);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM.
// ---------------------------------------------------------------------------------------------------------------

using simt::kBK;
using simt::kBM;
using simt::kBN;
constexpr int kGemmThreads = simt::kThreads;

template <typename XT, int BITS>
__global__ void __launch_bounds__(kGemmThreads) qlinear_gemm(QParams p) {
  __shared__ simt::ATile xs;
  __shared__ simt::WTile ws;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM, n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const XT* x = static_cast<const XT*>(p.x);
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.K; k0 += kBK) {
    // Consecutive threads take consecutive columns: coalesced reads of x and of the packed rows.
#pragma unroll
    for (int i = 0; i < kBM * kBK / kGemmThreads; ++i) {
      const int idx = tid + i * kGemmThreads, r = idx / kBK, c = idx % kBK;
      const int64_t m = m0 + r, col = k0 + c;
      xs[c][r] = (m < p.M && col < p.K) ? to_float(x[m * p.xs + col]) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kBN * kBK / kGemmThreads; ++i) {
      const int idx = tid + i * kGemmThreads, r = idx / kBK, c = idx % kBK;
      const int64_t n = n0 + r, col = k0 + c;
      float wt = 0.0f;
      if (n < p.N && col < p.K) {
        float s, z;
        group_params(p, n, col / p.g, s, z);
        wt = (static_cast<float>(code_at<BITS>(p.qweight + n * p.row_bytes, col)) - z) * s;
      }
      ws[c][r] = wt;
    }
    __syncthreads();
    simt::tile_step(xs, ws, tx, ty, acc);
    __syncthreads();
  }
  XT* y = static_cast<XT*>(p.y);
  simt::tile_store(acc, m0, n0, tx, ty, p.M, p.N, [&](int64_t m, int64_t n, float v) {
    y[m * p.ys + n] = from_float<XT>(v + (p.bias ? load_any(p.bias, n, p.bias_dtype) : 0.0f));
  });
}

template <typename XT, int BITS, int M>
void launch_gemv(const QParams& p, bool chunked, cudaStream_t s) {
  const int64_t blocks = (p.N * 32 + kGemvThreads - 1) / kGemvThreads;
  qlinear_gemv<XT, BITS, M><<<static_cast<unsigned>(blocks), kGemvThreads, 0, s>>>(p, chunked);
}

template <typename XT, int BITS>
int launch(const QParams& p, cudaStream_t s) {
  if (p.M <= TC_QLINEAR_GEMV_MAX_M) {
    constexpr int kCols = 16 * 8 / BITS;
    const bool chunked = p.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(p.qweight) % 16 == 0 &&
                         (p.groups == 1 || p.g % kCols == 0);
    switch (p.M) {
      case 1: launch_gemv<XT, BITS, 1>(p, chunked, s); break;
      case 2: launch_gemv<XT, BITS, 2>(p, chunked, s); break;
      case 3: launch_gemv<XT, BITS, 3>(p, chunked, s); break;
      case 4: launch_gemv<XT, BITS, 4>(p, chunked, s); break;
      case 5: launch_gemv<XT, BITS, 5>(p, chunked, s); break;
      case 6: launch_gemv<XT, BITS, 6>(p, chunked, s); break;
      case 7: launch_gemv<XT, BITS, 7>(p, chunked, s); break;
      default: launch_gemv<XT, BITS, 8>(p, chunked, s); break;
    }
  } else {
    const int64_t gy = (p.M + kBM - 1) / kBM, gx = (p.N + kBN - 1) / kBN;
    if (gy > 65535) return TC_ERR_BAD_SIZE;
    qlinear_gemm<XT, BITS><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kGemmThreads, 0, s>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : cuda_fail(err, "qlinear kernel launch");
}

template <typename XT>
int launch_bits(const QParams& p, int bits, cudaStream_t s) {
  return bits == 4 ? launch<XT, 4>(p, s) : launch<XT, 8>(p, s);
}

}  // namespace
}  // namespace tcompress

extern "C" int tc_qlinear_cuda(const void* x, int x_dtype, int64_t M, int64_t K, int64_t x_row_stride,
                               const uint8_t* qweight, int64_t N, int bits, const void* scales, int scale_dtype,
                               const uint8_t* zeros, int64_t group_size, const void* bias, int bias_dtype, void* y,
                               int64_t y_row_stride, int device, void* stream) {
  const int status = tcompress::check_qlinear_args(x, x_dtype, M, K, x_row_stride, qweight, N, bits, scales,
                                                   scale_dtype, zeros, group_size, bias, bias_dtype, y, y_row_stride);
  if (status != TC_OK || M == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  // Run on `device`, and leave the caller's current device as it was (see device_guard.h).
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  tcompress::QParams p;
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
    case TC_FLOAT32: return tcompress::launch_bits<float>(p, bits, s);
    case TC_FLOAT16: return tcompress::launch_bits<__half>(p, bits, s);
    case TC_BFLOAT16: return tcompress::launch_bits<__nv_bfloat16>(p, bits, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}
