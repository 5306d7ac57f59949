// The avx512 variant of the qlinear kernels (AVX-512 F/CD/BW/DQ/VL flags); only called after the CPU reports them.
#define TC_ISA_NS avx512

#include "qlinear_vec_avx512.h"

#include "qlinear_kernel.h"
