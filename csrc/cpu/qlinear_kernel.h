// The CPU qlinear kernel, written once over a vector type and compiled once per ISA.
//
// Each qlinear_<isa>.cpp defines TC_ISA_NS and QVec (its vector type extended with the integer operations that
// qlinear_decode.h uses) and includes this file, which defines tcompress::<isa>::qlinear (kernel_table.h): the GEMV
// path (qlinear_gemv.h) up to TC_QLINEAR_GEMV_MAX_M rows of x, the GEMM path (qlinear_gemm.h) above.
#pragma once

#include "kernel_table.h"
#include "qlinear_gemm.h"
#include "qlinear_gemv.h"
#include "tcompress/qlinear.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

template <int BITS>
int run_bits(const QLinearArgs& a) {
  if (a.M <= TC_QLINEAR_GEMV_MAX_M) return run_gemv<QVec, BITS>(a);
  return run_gemm<QVec, BITS>(a);
}

}  // namespace

// The entry point of this ISA (declared in kernel_table.h; dispatch.cpp puts it in the KernelTable).
int qlinear(const QLinearArgs& a) { return a.bits == 4 ? run_bits<4>(a) : run_bits<8>(a); }

}  // namespace TC_ISA_NS
}  // namespace tcompress
