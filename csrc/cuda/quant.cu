// CUDA kernels of the quant family (tcompress/quant_cuda.h): quantize, int4 pack / unpack, dequantize.
//
// Simple and exact rather than fast (quantization runs once, offline):
//   - quantize: one thread block per (row, group) item (a grid-stride loop over items): a block reduction gives
//     absmax or min / max and "all finite", thread 0 computes the scale exactly as the CPU kernels and the
//     pure-torch reference do (IEEE fp32 division __fdiv_rn, rounded to the storage dtype, 0 -> 1), then every
//     thread writes codes with rintf (round half to even) of __fdiv_rn(w, s);
//   - pack / unpack / dequantize: one thread per output element (grid-stride).
// Values that only the kernel sees (NaN/Inf in w, an overflowing scale, a code above 15) are reported through
// the caller's device_status word (see the header); the launch itself never synchronizes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <stdint.h>

#include "../common/quant_check.h"
#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/quant_cuda.h"

namespace tcompress {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops beyond this

__device__ __forceinline__ void report(int32_t* status, int code) {
  if (status != nullptr) atomicExch(status, code);
}

__device__ __forceinline__ float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Quantize.
// ---------------------------------------------------------------------------------------------------------------

template <typename TW, typename TS, bool SYM>
__global__ void __launch_bounds__(kThreads) quantize_kernel(const TW* __restrict__ w, int64_t rows, int64_t n,
                                                            int64_t w_row_stride, int64_t group, int bits,
                                                            uint8_t* __restrict__ codes, TS* __restrict__ scales,
                                                            uint8_t* __restrict__ zeros, int32_t* status) {
  __shared__ float s_lo[kThreads / 32], s_hi[kThreads / 32];
  __shared__ int s_bad[kThreads / 32];
  __shared__ float s_scale, s_zero;
  __shared__ int s_ok;
  const int64_t groups = n / group;
  const int64_t items = rows * groups;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t r = item / groups;
    const int64_t c0 = (item - r * groups) * group;
    const TW* x = w + r * w_row_stride + c0;

    // min(0, x...) and max(0, x...) (for SYM: max |x|), and whether every element is finite.
    float lo = 0.0f, hi = 0.0f;
    int bad = 0;
    for (int64_t i = threadIdx.x; i < group; i += blockDim.x) {
      const float v = to_float<TW>(x[i]);
      bad |= !(fabsf(v) <= FLT_MAX);
      if (SYM) {
        hi = fmaxf(hi, fabsf(v));
      } else {
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
      }
    }
    lo = warp_min(lo);
    hi = warp_max(hi);
    bad = __any_sync(0xffffffffu, bad);
    if (lane == 0) {
      s_lo[warp] = lo;
      s_hi[warp] = hi;
      s_bad[warp] = bad;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 1; k < warps; ++k) {
        lo = fminf(lo, s_lo[k]);
        hi = fmaxf(hi, s_hi[k]);
        bad |= s_bad[k];
      }
      float s, z = 0.0f;
      if (SYM) {
        s = __fdiv_rn(hi, static_cast<float>((1 << (bits - 1)) - 1));
      } else {
        s = __fdiv_rn(__fsub_rn(hi, lo), static_cast<float>((1 << bits) - 1));
      }
      s = to_float<TS>(from_float<TS>(s));  // the stored scale, rounded to nearest even
      const bool ok = !bad && fabsf(s) <= FLT_MAX;
      if (!ok) report(status, TC_ERR_NOT_FINITE);
      if (s == 0.0f) s = 1.0f;
      if (!SYM) z = fminf(fmaxf(rintf(__fdiv_rn(-lo, s)), 0.0f), static_cast<float>((1 << bits) - 1));
      scales[item] = from_float<TS>(s);
      if (!SYM) zeros[item] = static_cast<uint8_t>(static_cast<int>(z));
      s_scale = s;
      s_zero = z;
      s_ok = ok;
    }
    __syncthreads();
    if (s_ok) {
      const float s = s_scale;
      uint8_t* out = codes + r * n + c0;
      if (SYM) {
        const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
        const float zero = static_cast<float>(1 << (bits - 1));
        for (int64_t i = threadIdx.x; i < group; i += blockDim.x) {
          const float q = rintf(__fdiv_rn(to_float<TW>(x[i]), s));
          out[i] = static_cast<uint8_t>(static_cast<int>(fminf(fmaxf(q, -qmax - 1.0f), qmax) + zero));
        }
      } else {
        const float qmax = static_cast<float>((1 << bits) - 1);
        const float zero = s_zero;
        for (int64_t i = threadIdx.x; i < group; i += blockDim.x) {
          const float q = rintf(__fdiv_rn(to_float<TW>(x[i]), s));
          out[i] = static_cast<uint8_t>(static_cast<int>(fminf(fmaxf(q + zero, 0.0f), qmax)));
        }
      }
    }
    __syncthreads();  // the shared words are rewritten by the next item
  }
}

template <typename TW, typename TS>
int launch_quantize(const void* w, int64_t rows, int64_t n, int64_t stride, int64_t group, int bits, bool symmetric,
                    uint8_t* codes, void* scales, uint8_t* zeros, int32_t* status, cudaStream_t stream) {
  const int64_t items = rows * (n / group);
  const unsigned blocks = static_cast<unsigned>(items < kMaxBlocks ? items : kMaxBlocks);
  // Short groups would leave most of a 256-thread block idle.
  const int threads = group >= kThreads ? kThreads : static_cast<int>((group + 31) / 32 * 32);
  if (symmetric) {
    quantize_kernel<TW, TS, true><<<blocks, threads, 0, stream>>>(static_cast<const TW*>(w), rows, n, stride, group,
                                                                  bits, codes, static_cast<TS*>(scales), zeros,
                                                                  status);
  } else {
    quantize_kernel<TW, TS, false><<<blocks, threads, 0, stream>>>(static_cast<const TW*>(w), rows, n, stride, group,
                                                                   bits, codes, static_cast<TS*>(scales), zeros,
                                                                   status);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : cuda_fail(err, "quantize_kernel launch");
}

template <typename TW>
int quantize_scale_dtype(int scale_dtype, const void* w, int64_t rows, int64_t n, int64_t stride, int64_t group,
                         int bits, bool symmetric, uint8_t* codes, void* scales, uint8_t* zeros, int32_t* status,
                         cudaStream_t stream) {
  switch (scale_dtype) {
    case TC_FLOAT32:
      return launch_quantize<TW, float>(w, rows, n, stride, group, bits, symmetric, codes, scales, zeros, status,
                                        stream);
    case TC_FLOAT16:
      return launch_quantize<TW, __half>(w, rows, n, stride, group, bits, symmetric, codes, scales, zeros, status,
                                         stream);
    case TC_BFLOAT16:
      return launch_quantize<TW, __nv_bfloat16>(w, rows, n, stride, group, bits, symmetric, codes, scales, zeros,
                                                status, stream);
    default: return TC_ERR_BAD_DTYPE;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pack / unpack: one thread per packed byte.
// ---------------------------------------------------------------------------------------------------------------

__global__ void pack_kernel(const uint8_t* __restrict__ codes, uint8_t* __restrict__ packed, int64_t rows,
                            int64_t half, int64_t codes_row_stride, int64_t packed_row_stride, int32_t* status) {
  const int64_t total = rows * half;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / half;
    const int64_t j = e - r * half;
    const uint8_t lo = codes[r * codes_row_stride + 2 * j];
    const uint8_t hi = codes[r * codes_row_stride + 2 * j + 1];
    if ((lo | hi) & 0xF0) report(status, TC_ERR_BAD_ARGUMENT);
    packed[r * packed_row_stride + j] = static_cast<uint8_t>((lo & 0x0F) | (hi << 4));
  }
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, uint8_t* __restrict__ codes, int64_t rows,
                              int64_t half, int64_t packed_row_stride, int64_t codes_row_stride) {
  const int64_t total = rows * half;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / half;
    const int64_t j = e - r * half;
    const uint8_t p = packed[r * packed_row_stride + j];
    codes[r * codes_row_stride + 2 * j] = p & 0x0F;
    codes[r * codes_row_stride + 2 * j + 1] = p >> 4;
  }
}

unsigned elementwise_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// ---------------------------------------------------------------------------------------------------------------
// Dequantize: one thread per output element.
// ---------------------------------------------------------------------------------------------------------------

template <typename TS, typename TO, bool PACKED>
__global__ void dequantize_kernel(const uint8_t* __restrict__ codes, int64_t rows, int64_t n,
                                  int64_t codes_row_stride, const TS* __restrict__ scales,
                                  const uint8_t* __restrict__ zeros, float implicit_zero, int64_t group,
                                  TO* __restrict__ out, int64_t out_row_stride) {
  const int64_t total = rows * n;
  const int64_t groups = n / group;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / n;
    const int64_t c = e - r * n;
    const int64_t g = r * groups + c / group;
    const uint8_t* row = codes + r * codes_row_stride;
    const int u = PACKED ? (row[c >> 1] >> ((c & 1) * 4)) & 0x0F : row[c];
    const float z = zeros != nullptr ? static_cast<float>(zeros[g]) : implicit_zero;
    // (u - z) * s as two separately rounded fp32 operations, never fused.
    out[r * out_row_stride + c] = from_float<TO>(__fmul_rn(__fsub_rn(static_cast<float>(u), z), to_float<TS>(scales[g])));
  }
}

template <typename TS, typename TO>
int launch_dequantize(const uint8_t* codes, bool packed, int64_t rows, int64_t n, int64_t codes_row_stride,
                      const void* scales, const uint8_t* zeros, int bits, int64_t group, void* out,
                      int64_t out_row_stride, cudaStream_t stream) {
  const unsigned blocks = elementwise_blocks(rows * n);
  const float implicit_zero = static_cast<float>(1 << (bits - 1));
  if (packed) {
    dequantize_kernel<TS, TO, true><<<blocks, kThreads, 0, stream>>>(codes, rows, n, codes_row_stride,
                                                                      static_cast<const TS*>(scales), zeros,
                                                                      implicit_zero, group, static_cast<TO*>(out),
                                                                      out_row_stride);
  } else {
    dequantize_kernel<TS, TO, false><<<blocks, kThreads, 0, stream>>>(codes, rows, n, codes_row_stride,
                                                                       static_cast<const TS*>(scales), zeros,
                                                                       implicit_zero, group, static_cast<TO*>(out),
                                                                       out_row_stride);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : cuda_fail(err, "dequantize_kernel launch");
}

template <typename TS>
int dequantize_out_dtype(int out_dtype, const uint8_t* codes, bool packed, int64_t rows, int64_t n,
                         int64_t codes_row_stride, const void* scales, const uint8_t* zeros, int bits, int64_t group,
                         void* out, int64_t out_row_stride, cudaStream_t stream) {
  switch (out_dtype) {
    case TC_FLOAT32:
      return launch_dequantize<TS, float>(codes, packed, rows, n, codes_row_stride, scales, zeros, bits, group, out,
                                          out_row_stride, stream);
    case TC_FLOAT16:
      return launch_dequantize<TS, __half>(codes, packed, rows, n, codes_row_stride, scales, zeros, bits, group, out,
                                           out_row_stride, stream);
    case TC_BFLOAT16:
      return launch_dequantize<TS, __nv_bfloat16>(codes, packed, rows, n, codes_row_stride, scales, zeros, bits,
                                                  group, out, out_row_stride, stream);
    default: return TC_ERR_BAD_DTYPE;
  }
}

}  // namespace
}  // namespace tcompress

namespace qc = tcompress::quant_check;

extern "C" int tc_quantize_cuda(const void* w, int w_dtype, int64_t out_features, int64_t in_features,
                                int64_t w_row_stride, int bits, int64_t group_size, int symmetric, uint8_t* codes,
                                void* scales, int scale_dtype, uint8_t* zeros, int32_t* device_status, int device,
                                void* stream) {
  const int status = qc::check_quantize(w, w_dtype, out_features, in_features, w_row_stride, bits, group_size,
                                        symmetric, codes, scales, scale_dtype, zeros);
  if (status != TC_OK || out_features == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const int64_t stride = qc::effective_stride(out_features, w_row_stride, in_features);
  const int64_t group = qc::group_length(in_features, group_size);
  const bool sym = symmetric != 0;
  uint8_t* z = sym ? nullptr : zeros;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (w_dtype) {
    case TC_FLOAT32:
      return tcompress::quantize_scale_dtype<float>(scale_dtype, w, out_features, in_features, stride, group, bits,
                                                    sym, codes, scales, z, device_status, s);
    case TC_FLOAT16:
      return tcompress::quantize_scale_dtype<__half>(scale_dtype, w, out_features, in_features, stride, group, bits,
                                                     sym, codes, scales, z, device_status, s);
    case TC_BFLOAT16:
      return tcompress::quantize_scale_dtype<__nv_bfloat16>(scale_dtype, w, out_features, in_features, stride, group,
                                                            bits, sym, codes, scales, z, device_status, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}

extern "C" int tc_pack_int4_cuda(const uint8_t* codes, uint8_t* packed, int64_t rows, int64_t n,
                                 int64_t codes_row_stride, int64_t packed_row_stride, int32_t* device_status,
                                 int device, void* stream) {
  const int status = qc::check_pack(codes, packed, rows, n, codes_row_stride, packed_row_stride);
  if (status != TC_OK || rows == 0 || n == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const int64_t half = n / 2;
  tcompress::pack_kernel<<<tcompress::elementwise_blocks(rows * half), tcompress::kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(
      codes, packed, rows, half, qc::effective_stride(rows, codes_row_stride, n),
      qc::effective_stride(rows, packed_row_stride, half), device_status);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : tcompress::cuda_fail(err, "pack_kernel launch");
}

extern "C" int tc_unpack_int4_cuda(const uint8_t* packed, uint8_t* codes, int64_t rows, int64_t n,
                                   int64_t packed_row_stride, int64_t codes_row_stride, int device, void* stream) {
  const int status = qc::check_pack(codes, packed, rows, n, codes_row_stride, packed_row_stride);
  if (status != TC_OK || rows == 0 || n == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const int64_t half = n / 2;
  tcompress::unpack_kernel<<<tcompress::elementwise_blocks(rows * half), tcompress::kThreads, 0,
                             static_cast<cudaStream_t>(stream)>>>(
      packed, codes, rows, half, qc::effective_stride(rows, packed_row_stride, half),
      qc::effective_stride(rows, codes_row_stride, n));
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : tcompress::cuda_fail(err, "unpack_kernel launch");
}

extern "C" int tc_dequantize_cuda(const uint8_t* codes, int codes_format, int64_t out_features, int64_t in_features,
                                  int64_t codes_row_stride, const void* scales, int scale_dtype, const uint8_t* zeros,
                                  int bits, int64_t group_size, void* out, int out_dtype, int64_t out_row_stride,
                                  int device, void* stream) {
  const int status = qc::check_dequantize(codes, codes_format, out_features, in_features, codes_row_stride, scales,
                                          scale_dtype, zeros, bits, group_size, out, out_dtype, out_row_stride);
  if (status != TC_OK || out_features == 0) return status;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const bool packed = codes_format == TC_CODES_INT4_PACKED;
  const int64_t cs = qc::effective_stride(out_features, codes_row_stride, packed ? in_features / 2 : in_features);
  const int64_t os = qc::effective_stride(out_features, out_row_stride, in_features);
  const int64_t group = qc::group_length(in_features, group_size);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (scale_dtype) {
    case TC_FLOAT32:
      return tcompress::dequantize_out_dtype<float>(out_dtype, codes, packed, out_features, in_features, cs, scales,
                                                    zeros, bits, group, out, os, s);
    case TC_FLOAT16:
      return tcompress::dequantize_out_dtype<__half>(out_dtype, codes, packed, out_features, in_features, cs, scales,
                                                     zeros, bits, group, out, os, s);
    case TC_BFLOAT16:
      return tcompress::dequantize_out_dtype<__nv_bfloat16>(out_dtype, codes, packed, out_features, in_features, cs,
                                                            scales, zeros, bits, group, out, os, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}
