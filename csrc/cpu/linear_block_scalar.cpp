// The scalar variant of the linear_block kernels: plain C++ for the baseline target (one-lane "vectors").
#define TC_ISA_NS scalar

#include "simd_scalar.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

struct LBVec : VecScalar {
  static T load_i8(const int8_t* p) { return static_cast<float>(*p); }
};

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress

#include "linear_block_kernel.h"
