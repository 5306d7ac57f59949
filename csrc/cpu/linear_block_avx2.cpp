// The avx2 variant of the linear_block kernels (AVX2 + FMA + F16C flags); only called after the CPU reports them.
#define TC_ISA_NS avx2

#include "simd_scalar.h"
#include "simd_avx2.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct LBVec : VecAvx2 {
  // 8 signed codes -> 8 floats.
  static T load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "linear_block_kernel.h"
