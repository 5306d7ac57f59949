// CUDA kernel of the exit gate (tcompress/exit_gate_cuda.h): one 256-thread block per row (grid-stride over rows).
//
// Each thread keeps online statistics of the elements it reads (coalesced, stride blockDim.x): the running max m,
// S = sum e^(l - m), T = sum e^(l - m)(l - m), the second largest logit with multiplicity, the first index of the
// maximum and a bad-row kind. Threads merge with warp shuffles, warps through shared memory, exactly like the CPU
// kernels merge vocabulary ranges; thread 0 computes the confidence (max_prob 1/S, margin (1 - e^(l2 - m))/S,
// entropy log S - T/S), the exit decision and the argmax. A row with NaN, +inf or only -inf is reported through
// atomicMin(device_bad, row * 4 + kind), so the host learns the first such row. Never ran on a GPU in this
// project's CI (no device there): compiled for sm_80 / sm_90 only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/exit_gate_cuda.h"

namespace tcompress {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

struct Stats {
  float m, s, t, top2;
  int64_t argmax;
  int bad;
};

__device__ __forceinline__ Stats empty_stats() { return Stats{-INFINITY, 0.0f, 0.0f, -INFINITY, -1, TC_EXIT_BAD_NONE}; }

// Adds logit x at index i.
__device__ __forceinline__ void add_one(Stats& st, float x, int64_t i) {
  if (x != x) {
    st.bad = TC_EXIT_BAD_NAN;
    return;
  }
  if (x == INFINITY) {
    if (st.bad == TC_EXIT_BAD_NONE) st.bad = TC_EXIT_BAD_POSINF;
    return;
  }
  if (x == -INFINITY) return;
  if (x > st.m) {
    if (st.m == -INFINITY) {
      st.s = 1.0f;
      st.t = 0.0f;
    } else {
      const float delta = st.m - x;  // < 0
      const float f = __expf(delta);
      st.t = f * (st.t + delta * st.s);  // the new element itself adds e^0 * 0
      st.s = f * st.s + 1.0f;
    }
    st.top2 = st.m;
    st.m = x;
    st.argmax = i;
  } else {
    st.top2 = fmaxf(st.top2, x);
    const float d = fmaxf(x - st.m, -88.0f);
    const float e = __expf(d);
    st.s += e;
    st.t = fmaf(e, d, st.t);
  }
}

// The statistics of the union of two sets of elements (a tie for the maximum keeps the lower index).
__device__ __forceinline__ Stats merge(const Stats& a, const Stats& b) {
  Stats r;
  r.bad = a.bad != TC_EXIT_BAD_NONE ? (b.bad == TC_EXIT_BAD_NAN ? b.bad : a.bad) : b.bad;
  if (b.m == -INFINITY) {
    r = Stats{a.m, a.s, a.t, a.top2, a.argmax, r.bad};
    return r;
  }
  if (a.m == -INFINITY) {
    r = Stats{b.m, b.s, b.t, b.top2, b.argmax, r.bad};
    return r;
  }
  r.m = fmaxf(a.m, b.m);
  r.top2 = a.m >= b.m ? fmaxf(a.top2, b.m) : fmaxf(a.m, b.top2);
  r.argmax = a.m > b.m ? a.argmax : b.m > a.m ? b.argmax : min(a.argmax, b.argmax);
  const float da = a.m - r.m, db = b.m - r.m;
  const float fa = __expf(da), fb = __expf(db);
  r.s = fa * a.s + fb * b.s;
  r.t = fa * (a.t + da * a.s) + fb * (b.t + db * b.s);
  return r;
}

__device__ __forceinline__ Stats shuffle_xor(const Stats& st, int offset) {
  Stats o;
  o.m = __shfl_xor_sync(0xffffffffu, st.m, offset);
  o.s = __shfl_xor_sync(0xffffffffu, st.s, offset);
  o.t = __shfl_xor_sync(0xffffffffu, st.t, offset);
  o.top2 = __shfl_xor_sync(0xffffffffu, st.top2, offset);
  o.argmax = __shfl_xor_sync(0xffffffffu, st.argmax, offset);
  o.bad = __shfl_xor_sync(0xffffffffu, st.bad, offset);
  return o;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    exit_gate_kernel(const T* __restrict__ logits, int64_t rows, int64_t vocab, int64_t row_stride, int criterion,
                     float threshold, float* __restrict__ confidence, uint8_t* __restrict__ exit_mask,
                     int64_t* __restrict__ argmax, int64_t* device_bad) {
  __shared__ Stats warp_stats[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = logits + r * row_stride;
    Stats st = empty_stats();
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) add_one(st, to_float<T>(x[i]), i);
    for (int offset = 16; offset > 0; offset >>= 1) st = merge(st, shuffle_xor(st, offset));
    if (lane == 0) warp_stats[warp] = st;
    __syncthreads();
    if (threadIdx.x == 0) {
      Stats all = warp_stats[0];
      for (int w = 1; w < kThreads / 32; ++w) all = merge(all, warp_stats[w]);
      int bad = all.bad;
      if (bad == TC_EXIT_BAD_NONE && all.m == -INFINITY) bad = TC_EXIT_BAD_ALL_NEGINF;
      if (bad != TC_EXIT_BAD_NONE) {
        if (device_bad != nullptr) atomicMin(reinterpret_cast<long long*>(device_bad), (long long)(r * 4 + bad));
        confidence[r] = NAN;
        exit_mask[r] = 0;
        if (argmax != nullptr) argmax[r] = -1;
      } else {
        float conf;
        if (criterion == TC_EXIT_MAX_PROB) {
          conf = 1.0f / all.s;
        } else if (criterion == TC_EXIT_MARGIN) {
          conf = (1.0f - expf(all.top2 - all.m)) / all.s;
        } else {
          conf = fmaxf(0.0f, logf(all.s) - all.t / all.s);
        }
        confidence[r] = conf;
        exit_mask[r] = criterion == TC_EXIT_ENTROPY ? (conf < threshold) : (conf >= threshold);
        if (argmax != nullptr) argmax[r] = all.argmax;
      }
    }
    __syncthreads();  // warp_stats is reused by the next row
  }
}

template <typename T>
int launch(const void* logits, int64_t rows, int64_t vocab, int64_t row_stride, int criterion, float threshold,
           float* confidence, uint8_t* exit_mask, int64_t* argmax, int64_t* device_bad, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
  exit_gate_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(logits), rows, vocab, row_stride,
                                                        criterion, threshold, confidence, exit_mask, argmax,
                                                        device_bad);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : cuda_fail(err, "exit_gate_kernel launch");
}

}  // namespace
}  // namespace tcompress

extern "C" int tc_exit_gate_cuda(const void* logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride,
                                 int criterion, float threshold, float* confidence, uint8_t* exit_mask,
                                 int64_t* argmax, int64_t* device_bad, int device, void* stream) {
  if (tc_dtype_size(dtype) == 0) return TC_ERR_BAD_DTYPE;
  if (criterion < TC_EXIT_MAX_PROB || criterion > TC_EXIT_ENTROPY || isnan(threshold)) return TC_ERR_BAD_ARGUMENT;
  if (rows < 0 || vocab < 1) return TC_ERR_BAD_SIZE;
  if (rows > 1 && row_stride < vocab) return TC_ERR_BAD_STRIDE;
  if (rows == 0) return TC_OK;
  if (logits == nullptr || confidence == nullptr || exit_mask == nullptr) return TC_ERR_NULL_POINTER;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  const int64_t stride = rows > 1 ? row_stride : vocab;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case TC_FLOAT32:
      return tcompress::launch<float>(logits, rows, vocab, stride, criterion, threshold, confidence, exit_mask, argmax,
                                      device_bad, s);
    case TC_FLOAT16:
      return tcompress::launch<__half>(logits, rows, vocab, stride, criterion, threshold, confidence, exit_mask,
                                       argmax, device_bad, s);
    default:
      return tcompress::launch<__nv_bfloat16>(logits, rows, vocab, stride, criterion, threshold, confidence,
                                              exit_mask, argmax, device_bad, s);
  }
}
