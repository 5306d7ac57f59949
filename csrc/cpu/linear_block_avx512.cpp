// The avx512 variant of the linear_block kernels (AVX-512 F/CD/BW/DQ/VL flags); only called after the CPU reports
// them.
#define TC_ISA_NS avx512

#include "simd_scalar.h"
#include "simd_avx512.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct LBVec : VecAvx512 {
  // 16 signed codes -> 16 floats.
  static T load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "linear_block_kernel.h"
