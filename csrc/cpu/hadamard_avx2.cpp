// The avx2 variant of the Hadamard kernel. Compiled with -mavx2 -mfma -mf16c (x86-64-v3); only called after the CPU reports AVX2, FMA and F16C.
#define TC_ISA_NS avx2
#define TC_VEC VecAvx2

#include "simd_scalar.h"
#include "simd_avx2.h"
#include "hadamard_kernel.h"
