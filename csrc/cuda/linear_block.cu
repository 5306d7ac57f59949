// CUDA kernels of the fused linear block (contract: tcompress/linear_block.h; launcher: tcompress/linear_block_cuda.h)
//
//   stage 1 ("project"): t = ((x - mu) U) * u_scale     M x r, fp32, in a stream-ordered scratch buffer
//   stage 2 ("expand"):  y = x + b + (t V) * v_scale
//
// Both stages are the same product, A (M x K, row-major) times W (K x N, row-major: the documented factor layout),
// so one GEMV and one GEMM kernel serve both; a Stage policy says where A comes from and what becomes of a sum.
// The int8 scales are per output column in both stages (u_scale per column of U = per t column, v_scale per column
// of V = per y column), so they are applied once to the finished sum and the main loops only widen the codes.
// Two launches instead of one: every output column of stage 2 needs all of t, so a fused kernel would either read
// the factors once per row tile (prefill) or recompute t in every block (decode); t is small and stays in L2.
//
// GEMV (M <= TC_LINEAR_BLOCK_GEMV_MAX_M, decoding; memory bound): a block owns 32 output columns (one per lane)
// and a range of K; its 8 warps take interleaved rows of that range, so a warp reads 32 consecutive factor
// elements of one row per step and every factor element is read exactly once per call. The block's slice of A
// is staged in shared memory as fp32 (every lane reads the same word: a broadcast); the warps' partial sums meet
// in shared memory, warp m finishing row m. Stage 1 has few columns (N = r), so it also splits K over blocks
// until the device is full and adds its partial sums into a zeroed t with atomicAdd (t's summation order is not
// fixed; fp32 rounding only). Stage 2 (N = d) keeps all of K in one block so that its epilogue can write y.
// GEMM (more rows): the 64 x 64 SIMT tile of simt_tile.cuh (256 threads, 4 x 4 outputs per thread), K in steps of
// 32 staged as fp32 in shared memory, plain FMAs (no tensor cores yet); row tiles beyond the grid's y limit are
// looped over.
//
// Never ran on a GPU in this project's CI (no device there): compiled for sm_80 / sm_90 only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../common/linear_block_check.h"
#include "cuda_error.h"
#include "device_guard.h"
#include "float_convert.cuh"
#include "simt_tile.cuh"
#include "tcompress/cuda_device.h"
#include "tcompress/linear_block.h"
#include "tcompress/linear_block_cuda.h"

namespace tcompress {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Same switch point as the CPU kernel, so the two share the row counts at which their paths change.
constexpr int kGemvMaxRows = TC_LINEAR_BLOCK_GEMV_MAX_M;
constexpr int kGemvCols = 32;           // output columns per GEMV block: one per lane
constexpr int kGemvStageK = 256;        // rows of K whose activations sit in shared memory at a time
constexpr int kGemvUnroll = 4;          // independent factor loads in flight per lane
constexpr int64_t kGemvMinSplitK = 128; // stage 1 splits K no finer than this (16 rows per warp)
using simt::kBK;
using simt::kBM;
using simt::kBN;
constexpr int64_t kMaxGridY = 65535;
static_assert(kWarps >= kGemvMaxRows, "the GEMV epilogue gives each row of x its own warp");
static_assert(kThreads == simt::kThreads, "the GEMM block is one SIMT tile");

struct Problem {
  const void* x;
  int64_t x_stride;  // elements between rows
  const void* U;
  const void* V;
  const float* u_scale;  // null unless int8 factors
  const float* v_scale;
  const void* b;
  int b_dtype;
  const void* mu;
  int mu_dtype;
  void* y;
  int64_t y_stride;
  float* t;  // M x r scratch, row-major (row stride r)
  int64_t M, d, r;
};

__device__ __forceinline__ float load_any(const void* p, int64_t i, int dtype) {
  switch (dtype) {
    case TC_FLOAT16: return __half2float(__ldg(static_cast<const __half*>(p) + i));
    case TC_BFLOAT16: return __bfloat162float(__ldg(static_cast<const __nv_bfloat16*>(p) + i));
    default: return __ldg(static_cast<const float*>(p) + i);
  }
}

// Factor element i widened to fp32 (int8: the code itself; its scale is applied to the finished sum).
template <typename FT>
__device__ __forceinline__ float factor_at(const FT* w, int64_t i) {
  return to_float<FT>(__ldg(w + i));
}
template <>
__device__ __forceinline__ float factor_at<int8_t>(const int8_t* w, int64_t i) {
  return static_cast<float>(__ldg(w + i));
}

__device__ __forceinline__ float column_scale(const float* scale, int64_t n) {
  return scale != nullptr ? __ldg(scale + n) : 1.0f;
}

// Stage 1: A = x - mu (M x d), W = U (d x r), sums go to t (scaled by u_scale).
template <typename XT, typename FT>
struct ProjectStage {
  static constexpr bool kSplitK = true;
  __device__ static int64_t K(const Problem& p) { return p.d; }
  __device__ static int64_t N(const Problem& p) { return p.r; }
  __device__ static const FT* W(const Problem& p) { return static_cast<const FT*>(p.U); }
  __device__ static float a(const Problem& p, int64_t m, int64_t k) {
    return to_float<XT>(static_cast<const XT*>(p.x)[m * p.x_stride + k]) - load_any(p.mu, k, p.mu_dtype);
  }
  // GEMM: the block owns the whole sum of t[m, n].
  __device__ static void emit(const Problem& p, int64_t m, int64_t n, float acc) {
    p.t[m * p.r + n] = acc * column_scale(p.u_scale, n);
  }
  // GEMV: one block's share of K; t was zeroed before the launch.
  __device__ static void add_partial(const Problem& p, int64_t m, int64_t n, float acc) {
    atomicAdd(p.t + m * p.r + n, acc * column_scale(p.u_scale, n));
  }
};

// Stage 2: A = t (M x r), W = V (r x d), sums become y = x + b + sum * v_scale.
template <typename XT, typename FT>
struct ExpandStage {
  static constexpr bool kSplitK = false;
  __device__ static int64_t K(const Problem& p) { return p.r; }
  __device__ static int64_t N(const Problem& p) { return p.d; }
  __device__ static const FT* W(const Problem& p) { return static_cast<const FT*>(p.V); }
  // Plain load: t was written by the previous kernel on this stream.
  __device__ static float a(const Problem& p, int64_t m, int64_t k) { return p.t[m * p.r + k]; }
  __device__ static void emit(const Problem& p, int64_t m, int64_t n, float acc) {
    const float xv = to_float<XT>(static_cast<const XT*>(p.x)[m * p.x_stride + n]);
    static_cast<XT*>(p.y)[m * p.y_stride + n] =
        from_float<XT>(xv + load_any(p.b, n, p.b_dtype) + acc * column_scale(p.v_scale, n));
  }
  __device__ static void add_partial(const Problem&, int64_t, int64_t, float) {}  // never split (see launcher)
};

// ---------------------------------------------------------------------------------------------------------------
// GEMV: grid (ceil(N / 32), K splits); block y covers rows [y * k_chunk, min(K, (y + 1) * k_chunk)) of W.
// ---------------------------------------------------------------------------------------------------------------

template <class Stage, typename FT>
__global__ void __launch_bounds__(kThreads) linear_block_gemv(Problem p, int64_t k_chunk) {
  __shared__ float a_s[kGemvMaxRows][kGemvStageK];
  __shared__ float partial_s[kWarps][kGemvMaxRows][kGemvCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int rows = static_cast<int>(p.M);  // <= kGemvMaxRows (launcher)
  const int64_t K = Stage::K(p), N = Stage::N(p);
  const FT* W = Stage::W(p);
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvCols + lane;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * k_chunk;
  const int64_t k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
  float acc[kGemvMaxRows];
#pragma unroll
  for (int m = 0; m < kGemvMaxRows; ++m) acc[m] = 0.0f;

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kGemvStageK) {
    const int len = static_cast<int>(k_end - k0 < kGemvStageK ? k_end - k0 : kGemvStageK);
    __syncthreads();  // every warp is done with the previous slice of a_s
    // Consecutive threads read consecutive elements of a row of A (coalesced).
    for (int i = threadIdx.x; i < rows * len; i += kThreads) {
      const int m = i / len, kk = i - m * len;
      a_s[m][kk] = Stage::a(p, m, k0 + kk);
    }
    __syncthreads();
    if (n < N) {
      int kk = warp;
      for (; kk + (kGemvUnroll - 1) * kWarps < len; kk += kGemvUnroll * kWarps) {
        float w[kGemvUnroll];
#pragma unroll
        for (int q = 0; q < kGemvUnroll; ++q) w[q] = factor_at(W, (k0 + kk + q * kWarps) * N + n);
#pragma unroll
        for (int q = 0; q < kGemvUnroll; ++q) {
#pragma unroll
          for (int m = 0; m < kGemvMaxRows; ++m) {
            if (m < rows) acc[m] = fmaf(a_s[m][kk + q * kWarps], w[q], acc[m]);
          }
        }
      }
      for (; kk < len; kk += kWarps) {
        const float w = factor_at(W, (k0 + kk) * N + n);
#pragma unroll
        for (int m = 0; m < kGemvMaxRows; ++m) {
          if (m < rows) acc[m] = fmaf(a_s[m][kk], w, acc[m]);
        }
      }
    }
  }

#pragma unroll
  for (int m = 0; m < kGemvMaxRows; ++m) partial_s[warp][m][lane] = acc[m];
  __syncthreads();
  // Warp m adds up row m over the warps (a fixed order) and finishes it.
  if (warp < rows && n < N) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += partial_s[w][warp][lane];
    if constexpr (Stage::kSplitK) {
      Stage::add_partial(p, warp, n, sum);
    } else {
      Stage::emit(p, warp, n, sum);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM: grid (ceil(N / 64), min(row tiles, 65535)).
// ---------------------------------------------------------------------------------------------------------------

template <class Stage, typename FT>
__global__ void __launch_bounds__(kThreads) linear_block_gemm(Problem p) {
  __shared__ simt::ATile a_s;  // A tile transposed: a_s[k][m]
  __shared__ simt::WTile w_s;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t K = Stage::K(p), N = Stage::N(p);
  const FT* W = Stage::W(p);
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int64_t row_tiles = (p.M + kBM - 1) / kBM;
  for (int64_t tile = blockIdx.y; tile < row_tiles; tile += gridDim.y) {
    const int64_t m0 = tile * kBM;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kBK) {
      // A: consecutive threads read consecutive k of one row (coalesced).
#pragma unroll
      for (int i = 0; i < kBM * kBK / kThreads; ++i) {
        const int idx = tid + i * kThreads, row = idx / kBK, c = idx % kBK;
        const int64_t m = m0 + row, k = k0 + c;
        a_s[c][row] = (m < p.M && k < K) ? Stage::a(p, m, k) : 0.0f;
      }
      // W: consecutive threads read consecutive columns of one factor row (coalesced).
#pragma unroll
      for (int i = 0; i < kBN * kBK / kThreads; ++i) {
        const int idx = tid + i * kThreads, kr = idx / kBN, c = idx % kBN;
        const int64_t k = k0 + kr, col = n0 + c;
        w_s[kr][c] = (k < K && col < N) ? factor_at(W, k * N + col) : 0.0f;
      }
      __syncthreads();
      simt::tile_step(a_s, w_s, tx, ty, acc);
      __syncthreads();  // the tiles are overwritten by the next step (or the next row tile)
    }
    simt::tile_store(acc, m0, n0, tx, ty, p.M, N,
                     [&](int64_t m, int64_t col, float v) { Stage::emit(p, m, col, v); });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Launch.
// ---------------------------------------------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? TC_OK : cuda_fail(err, what);
}

// Both stages on `s`, with p.t allocated (M x r floats).
template <typename XT, typename FT>
int launch_stages(const Problem& p, int device, cudaStream_t s) {
  using Project = ProjectStage<XT, FT>;
  using Expand = ExpandStage<XT, FT>;
  if (p.M <= kGemvMaxRows) {
    int sms = 0;
    const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetAttribute(MultiProcessorCount)");
    // Stage 1: split K until there are about two blocks per SM (r alone gives few column tiles).
    const int64_t col_tiles = ceil_div(p.r, kGemvCols);
    int64_t splits = ceil_div(2 * static_cast<int64_t>(sms > 0 ? sms : 1), col_tiles);
    const int64_t max_splits = p.d / kGemvMinSplitK > 1 ? p.d / kGemvMinSplitK : 1;
    if (splits > max_splits) splits = max_splits;
    if (splits > kMaxGridY) splits = kMaxGridY;
    if (splits < 1) splits = 1;
    const int64_t k_chunk = ceil_div(p.d, splits);
    splits = ceil_div(p.d, k_chunk);  // every block gets a non-empty range of K
    const cudaError_t zeroed = cudaMemsetAsync(p.t, 0, static_cast<size_t>(p.M * p.r) * sizeof(float), s);
    if (zeroed != cudaSuccess) return cuda_fail(zeroed, "cudaMemsetAsync (linear_block intermediate)");
    linear_block_gemv<Project, FT>
        <<<dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(splits)), kThreads, 0, s>>>(p, k_chunk);
    int status = launched("linear_block stage 1 (GEMV) launch");
    if (status != TC_OK) return status;
    // Stage 2: all of K (= r) per block, so the block can write its columns of y.
    linear_block_gemv<Expand, FT>
        <<<dim3(static_cast<unsigned>(ceil_div(p.d, kGemvCols)), 1u), kThreads, 0, s>>>(p, p.r);
    return launched("linear_block stage 2 (GEMV) launch");
  }
  const int64_t row_tiles = ceil_div(p.M, kBM);
  const unsigned grid_y = static_cast<unsigned>(row_tiles < kMaxGridY ? row_tiles : kMaxGridY);
  linear_block_gemm<Project, FT><<<dim3(static_cast<unsigned>(ceil_div(p.r, kBN)), grid_y), kThreads, 0, s>>>(p);
  const int status = launched("linear_block stage 1 (GEMM) launch");
  if (status != TC_OK) return status;
  linear_block_gemm<Expand, FT><<<dim3(static_cast<unsigned>(ceil_div(p.d, kBN)), grid_y), kThreads, 0, s>>>(p);
  return launched("linear_block stage 2 (GEMM) launch");
}

// Allocates t on the stream, runs both stages, and frees t after them (stream-ordered: no host synchronization).
template <typename XT, typename FT>
int run_with_scratch(Problem p, int device, cudaStream_t s) {
  const size_t bytes = static_cast<size_t>(p.M * p.r) * sizeof(float);
  void* scratch = nullptr;
  const cudaError_t err = cudaMallocAsync(&scratch, bytes, s);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return TC_ERR_OUT_OF_MEMORY;
  }
  if (err != cudaSuccess) return cuda_fail(err, "cudaMallocAsync (linear_block intermediate)");
  p.t = static_cast<float*>(scratch);
  int status = launch_stages<XT, FT>(p, device, s);
  const cudaError_t freed = cudaFreeAsync(scratch, s);
  if (status == TC_OK && freed != cudaSuccess) status = cuda_fail(freed, "cudaFreeAsync (linear_block intermediate)");
  return status;
}

template <typename XT>
int run_factor(const Problem& p, int factor_dtype, int device, cudaStream_t s) {
  switch (factor_dtype) {
    case TC_FLOAT32: return run_with_scratch<XT, float>(p, device, s);
    case TC_FLOAT16: return run_with_scratch<XT, __half>(p, device, s);
    case TC_BFLOAT16: return run_with_scratch<XT, __nv_bfloat16>(p, device, s);
    case TC_LINEAR_BLOCK_INT8: return run_with_scratch<XT, int8_t>(p, device, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}

bool aligned(const void* p, int bytes) { return bytes > 0 && reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace
}  // namespace tcompress

extern "C" int tc_linear_block_cuda(const void* x, int x_dtype, int64_t M, int64_t d, int64_t x_row_stride,
                                    const void* U, const void* V, int factor_dtype, int64_t r, const float* u_scale,
                                    const float* v_scale, const void* b, int b_dtype, const void* mu, int mu_dtype,
                                    void* y, int64_t y_row_stride, int device, void* stream) {
  const int status = tcompress::check_linear_block_args(x, x_dtype, M, d, x_row_stride, U, V, factor_dtype, r,
                                                        u_scale, v_scale, b, b_dtype, mu, mu_dtype, y, y_row_stride);
  if (status != TC_OK || M == 0) return status;
  // The kernels load whole elements: every pointer must be aligned to its element size (torch's always are).
  const int fsize = tcompress::linear_block_factor_size(factor_dtype);
  if (!tcompress::aligned(x, tc_dtype_size(x_dtype)) || !tcompress::aligned(y, tc_dtype_size(x_dtype)) ||
      !tcompress::aligned(U, fsize) || !tcompress::aligned(V, fsize) || !tcompress::aligned(b, tc_dtype_size(b_dtype)) ||
      !tcompress::aligned(mu, tc_dtype_size(mu_dtype)) || (u_scale != nullptr && !tcompress::aligned(u_scale, 4)) ||
      (v_scale != nullptr && !tcompress::aligned(v_scale, 4))) {
    return TC_ERR_BAD_ARGUMENT;
  }
  // The fp32 intermediate t (M x r) must be addressable; real calls are far below this.
  if (M > (int64_t(1) << 60) / r) return TC_ERR_OUT_OF_MEMORY;
  if (tc_cuda_device_count() == 0) return TC_ERR_NO_DEVICE;
  // Run on `device`, and leave the caller's current device as it was (see device_guard.h).
  const tcompress::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return tcompress::cuda_fail(guard.error(), "cudaSetDevice");
  tcompress::Problem p;
  p.x = x;
  p.x_stride = M > 1 ? x_row_stride : d;
  p.U = U;
  p.V = V;
  p.u_scale = u_scale;
  p.v_scale = v_scale;
  p.b = b;
  p.b_dtype = b_dtype;
  p.mu = mu;
  p.mu_dtype = mu_dtype;
  p.y = y;
  p.y_stride = M > 1 ? y_row_stride : d;
  p.t = nullptr;
  p.M = M;
  p.d = d;
  p.r = r;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (x_dtype) {
    case TC_FLOAT32: return tcompress::run_factor<float>(p, factor_dtype, device, s);
    case TC_FLOAT16: return tcompress::run_factor<__half>(p, factor_dtype, device, s);
    case TC_BFLOAT16: return tcompress::run_factor<__nv_bfloat16>(p, factor_dtype, device, s);
    default: return TC_ERR_BAD_DTYPE;
  }
}
