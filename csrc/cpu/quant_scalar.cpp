// The scalar variant of the quant kernels. Compiled with no ISA flags: plain C++ for the baseline target.
#define TC_ISA_NS scalar
#define TC_QVEC QVecScalar

#include "simd_scalar.h"
#include "quant_simd_scalar.h"
#include "quant_kernel.h"
