// The CPU kernels of every family, per ISA, and the one table through which the C entry points call them.
//
// Each kernel translation unit (<family>_<isa>.cpp, compiled with its own ISA flags) defines its family's entry
// points below in namespace tcompress::<isa>; everything else it compiles has internal linkage. dispatch.cpp puts
// their addresses into one KernelTable per ISA, and each family's <family>.cpp (compiled without ISA flags) checks
// the arguments and calls through active_kernels(). Only plain data crosses between translation units compiled
// with different flags (these addresses and the argument structs): no inline function is shared between them, so
// the linker can never substitute an AVX-512 copy of a helper into the scalar path.
#pragma once

#include <stdint.h>

#include "exit_gate_args.h"
#include "hadamard_args.h"
#include "linear_block_args.h"
#include "qlinear_a8_args.h"
#include "qlinear_args.h"
#include "quant_args.h"

namespace tcompress {

// The kernels of one variant. Each returns a tc_status.
struct KernelTable {
  int (*hadamard)(const HadamardArgs& args);
  int (*quantize)(const QuantizeArgs& args);
  int (*pack_int4)(const PackArgs& args);
  int (*unpack_int4)(const PackArgs& args);
  int (*dequantize)(const DequantizeArgs& args);
  int (*qlinear)(const QLinearArgs& args);
  // The vdpbf16ps GEMM for bf16 x with M > TC_QLINEAR_GEMV_MAX_M, or null. Tried before `qlinear`, which runs
  // when it returns kQLinearNotHandled.
  int (*qlinear_gemm_bf16)(const QLinearArgs& args);
  const char* qlinear_a8_name;                   // tc_qlinear_a8_kernel_name()
  int (*qlinear_a8)(const QLinearA8Args& args);  // y or acc, per the args
  int (*quantize_activations)(const QLinearA8Args& args, int8_t* codes, float* act_scales);
  int (*linear_block)(const LinearBlockArgs& args);
  int (*exit_gate)(const ExitGateArgs& args);
  int (*exit_gate_head)(const ExitGateHeadArgs& args);
};

// The table of the variant in use (dispatch.cpp).
const KernelTable& active_kernels();

// The entry points of the portable build and of the x86-64-v3 (AVX2) and x86-64-v4 (AVX-512) builds.
namespace scalar {
int hadamard(const HadamardArgs& args);
int quantize(const QuantizeArgs& args);
int pack_int4(const PackArgs& args);
int unpack_int4(const PackArgs& args);
int dequantize(const DequantizeArgs& args);
int qlinear(const QLinearArgs& args);
extern const char* const qlinear_a8_name;
int qlinear_a8(const QLinearA8Args& args);
int quantize_activations(const QLinearA8Args& args, int8_t* codes, float* act_scales);
int linear_block(const LinearBlockArgs& args);
int exit_gate(const ExitGateArgs& args);
int exit_gate_head(const ExitGateHeadArgs& args);
}  // namespace scalar

namespace avx2 {
int hadamard(const HadamardArgs& args);
int quantize(const QuantizeArgs& args);
int pack_int4(const PackArgs& args);
int unpack_int4(const PackArgs& args);
int dequantize(const DequantizeArgs& args);
int qlinear(const QLinearArgs& args);
extern const char* const qlinear_a8_name;
int qlinear_a8(const QLinearA8Args& args);
int quantize_activations(const QLinearA8Args& args, int8_t* codes, float* act_scales);
int linear_block(const LinearBlockArgs& args);
int exit_gate(const ExitGateArgs& args);
int exit_gate_head(const ExitGateHeadArgs& args);
}  // namespace avx2

// (No qlinear_a8 of its own: the avx512 variant runs avx512vnni's or, without VNNI, avx2's.)
namespace avx512 {
int hadamard(const HadamardArgs& args);
int quantize(const QuantizeArgs& args);
int pack_int4(const PackArgs& args);
int unpack_int4(const PackArgs& args);
int dequantize(const DequantizeArgs& args);
int qlinear(const QLinearArgs& args);
int linear_block(const LinearBlockArgs& args);
int exit_gate(const ExitGateArgs& args);
int exit_gate_head(const ExitGateHeadArgs& args);
}  // namespace avx512

// Built with the AVX-512 flags plus one extension each; called only when the CPU reports that extension.
namespace avx512vnni {  // vpdpbusd (AVX512_VNNI)
extern const char* const qlinear_a8_name;
int qlinear_a8(const QLinearA8Args& args);
int quantize_activations(const QLinearA8Args& args, int8_t* codes, float* act_scales);
}  // namespace avx512vnni

namespace avx512bf16 {  // vdpbf16ps (AVX512_BF16)
int qlinear_gemm_bf16(const QLinearArgs& args);
}  // namespace avx512bf16

}  // namespace tcompress
