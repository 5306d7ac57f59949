// The avx512 variant of the exit_gate kernels. Compiled with the AVX-512 flags (x86-64-v4); only called after the CPU reports AVX-512 F/CD/BW/DQ/VL.
#define TC_ISA_NS avx512
#define TC_GVEC GVecAvx512

#include "simd_scalar.h"
#include "simd_avx512.h"
#include "exit_gate_simd_scalar.h"
#include "exit_gate_simd_avx512.h"
#include "exit_gate_kernel.h"
