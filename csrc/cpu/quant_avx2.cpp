// The avx2 variant of the quant kernels. Compiled with the AVX2 flags (x86-64-v3); only called after the CPU
// reports AVX2, FMA and F16C.
#define TC_ISA_NS avx2
#define TC_QVEC QVecAvx2

#include "simd_scalar.h"
#include "simd_avx2.h"
#include "quant_simd_scalar.h"
#include "quant_simd_avx2.h"
#include "quant_kernel.h"
