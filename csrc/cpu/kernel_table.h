// The per-ISA kernel tables. Each ISA translation unit (hadamard_<isa>.cpp, compiled with its own flags) defines
// `tcompress::<isa>::kernels`; dispatch.cpp picks one. Only plain data crosses this boundary: no inline functions
// are shared between translation units compiled with different flags, so the linker can never substitute an
// AVX-512 copy of a helper into the scalar path.
#pragma once

#include <stdint.h>

namespace tcompress {

// Arguments of tc_hadamard_cpu after validation (see tcompress/hadamard.h): n == k * p with p a power of two.
struct HadamardArgs {
  const void* x;
  void* out;
  int64_t rows;
  int64_t n;
  int64_t k;
  int64_t p;
  int64_t x_row_stride;
  int64_t out_row_stride;
  int dtype;
  const float* hk;  // k x k, row-major, entries +-1 (null when k == 1)
  float scale;
  int num_threads;
};

struct KernelTable {
  int (*hadamard)(const HadamardArgs& args);
};

namespace scalar {
extern const KernelTable kernels;
}
namespace avx2 {
extern const KernelTable kernels;
}
namespace avx512 {
extern const KernelTable kernels;
}

// The table of the variant in use (dispatch.cpp).
const KernelTable& active_kernels();

}  // namespace tcompress
