// The 64 x 64 fp32 output tile of the SIMT GEMMs in qlinear.cu and linear_block.cu. A block of kThreads threads;
// thread (tx, ty) = (tid % 16, tid / 16) owns the 4 x 4 outputs at rows ty * 4 + i and columns tx * 4 + j of the
// tile. K goes in steps of kBK, each staged in shared memory as fp32 by the kernel (how A and W are read and
// widened differs between the kernels): A transposed (a_s[k][m]), W as is (w_s[k][n]), each row padded by 4 floats
// against bank conflicts. Plain FMAs, no tensor cores.
#pragma once

#include <stdint.h>

namespace tcompress {
namespace simt {

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 256;
typedef float ATile[kBK][kBM + 4];
typedef float WTile[kBK][kBN + 4];

// acc[i][j] += a_s[k][ty * 4 + i] * w_s[k][tx * 4 + j] for the kBK values of k of one step, in order of k.
__device__ __forceinline__ void tile_step(const ATile& a_s, const WTile& w_s, int tx, int ty, float (&acc)[4][4]) {
#pragma unroll 8
  for (int kk = 0; kk < kBK; ++kk) {
    float a[4], w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = a_s[kk][ty * 4 + i];
#pragma unroll
    for (int j = 0; j < 4; ++j) w[j] = w_s[kk][tx * 4 + j];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], w[j], acc[i][j]);
    }
  }
}

// emit(m, n, acc[i][j]) for each of the thread's outputs of the tile at (m0, n0) that lies inside the M x N result.
template <class Emit>
__device__ __forceinline__ void tile_store(const float (&acc)[4][4], int64_t m0, int64_t n0, int tx, int ty,
                                           int64_t M, int64_t N, Emit&& emit) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n < N) emit(m, n, acc[i][j]);
    }
  }
}

}  // namespace simt
}  // namespace tcompress
