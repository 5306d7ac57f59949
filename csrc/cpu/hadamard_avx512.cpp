// The avx512 variant of the Hadamard kernel. Compiled with the AVX-512 F/CD/BW/DQ/VL flags (x86-64-v4); only called after the CPU and OS report them.
#define TC_ISA_NS avx512
#define TC_VEC VecAvx512

#include "simd_scalar.h"
#include "simd_avx512.h"
#include "hadamard_kernel.h"
