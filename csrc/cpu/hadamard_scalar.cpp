// The scalar variant of the Hadamard kernel. Compiled with no ISA flags: plain C++ for the baseline target (what the compiler vectorizes on its own).
#define TC_ISA_NS scalar
#define TC_VEC VecScalar

#include "simd_scalar.h"
#include "hadamard_kernel.h"
