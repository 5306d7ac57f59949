// The avx2 variant of the exit_gate kernels. Compiled with the AVX2 flags (x86-64-v3); only called after the CPU reports AVX2, FMA and F16C.
#define TC_ISA_NS avx2
#define TC_GVEC GVecAvx2

#include "simd_scalar.h"
#include "simd_avx2.h"
#include "exit_gate_simd_scalar.h"
#include "exit_gate_simd_avx2.h"
#include "exit_gate_kernel.h"
