// The scalar variant of the exit_gate kernels. Compiled with no ISA flags: plain C++ for the baseline target.
#define TC_ISA_NS scalar
#define TC_GVEC GVecScalar

#include "simd_scalar.h"
#include "exit_gate_simd_scalar.h"
#include "exit_gate_kernel.h"
