// Which kernel variant runs: the best one this CPU supports, chosen once at load, or the one tc_isa_set() forces.
// Also the one place that fills each variant's KernelTable (kernel_table.h), CPU extensions beyond the variant's
// own (AVX512_VNNI, AVX512_BF16) included.
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "kernel_table.h"
#include "tcompress/isa.h"
#include "tcompress/status.h"

namespace tcompress {

namespace {

bool built(int isa) {
  switch (isa) {
    case TC_ISA_SCALAR: return true;
#ifdef TC_HAVE_X86_VARIANTS
    case TC_ISA_AVX2: return true;
    case TC_ISA_AVX512: return true;
#endif
    default: return false;
  }
}

bool cpu_supports(int isa) {
  tc_cpu_features f;
  tc_cpu_features_get(&f);
  switch (isa) {
    case TC_ISA_SCALAR: return true;
    case TC_ISA_AVX2: return f.avx2 && f.fma && f.f16c && f.bmi2;
    case TC_ISA_AVX512:
      return f.avx2 && f.fma && f.f16c && f.bmi2 && f.avx512f && f.avx512cd && f.avx512bw && f.avx512dq &&
             f.avx512vl;
    default: return false;
  }
}

int best_isa() {
  for (int isa = TC_ISA_COUNT - 1; isa > TC_ISA_SCALAR; --isa) {
    if (built(isa) && cpu_supports(isa)) return isa;
  }
  return TC_ISA_SCALAR;
}

std::atomic<int> g_isa{best_isa()};

KernelTable scalar_kernels() {
  KernelTable t{};
  t.hadamard = &scalar::hadamard;
  t.quantize = &scalar::quantize;
  t.pack_int4 = &scalar::pack_int4;
  t.unpack_int4 = &scalar::unpack_int4;
  t.dequantize = &scalar::dequantize;
  t.qlinear = &scalar::qlinear;
  t.qlinear_a8_name = scalar::qlinear_a8_name;
  t.qlinear_a8 = &scalar::qlinear_a8;
  t.quantize_activations = &scalar::quantize_activations;
  t.linear_block = &scalar::linear_block;
  t.exit_gate = &scalar::exit_gate;
  t.exit_gate_head = &scalar::exit_gate_head;
  return t;
}

#ifdef TC_HAVE_X86_VARIANTS
KernelTable avx2_kernels() {
  KernelTable t{};
  t.hadamard = &avx2::hadamard;
  t.quantize = &avx2::quantize;
  t.pack_int4 = &avx2::pack_int4;
  t.unpack_int4 = &avx2::unpack_int4;
  t.dequantize = &avx2::dequantize;
  t.qlinear = &avx2::qlinear;
  t.qlinear_a8_name = avx2::qlinear_a8_name;
  t.qlinear_a8 = &avx2::qlinear_a8;
  t.quantize_activations = &avx2::quantize_activations;
  t.linear_block = &avx2::linear_block;
  t.exit_gate = &avx2::exit_gate;
  t.exit_gate_head = &avx2::exit_gate_head;
  return t;
}

// qlinear_a8: the vpdpbusd kernels on a CPU with AVX512_VNNI, the AVX2 ones otherwise. qlinear: bf16 x with more
// than TC_QLINEAR_GEMV_MAX_M rows runs the vdpbf16ps GEMM on a CPU with AVX512_BF16 (same numerics as the fp32
// GEMM up to summation order; see qlinear_avx512_bf16.cpp); TC_QLINEAR_BF16_GEMM=0 in the environment turns it off
// (A/B timing).
KernelTable avx512_kernels() {
  tc_cpu_features f;
  tc_cpu_features_get(&f);
  KernelTable t{};
  t.hadamard = &avx512::hadamard;
  t.quantize = &avx512::quantize;
  t.pack_int4 = &avx512::pack_int4;
  t.unpack_int4 = &avx512::unpack_int4;
  t.dequantize = &avx512::dequantize;
  t.qlinear = &avx512::qlinear;
  const char* env = getenv("TC_QLINEAR_BF16_GEMM");
  if (f.avx512_bf16 != 0 && !(env != nullptr && strcmp(env, "0") == 0)) {
    t.qlinear_gemm_bf16 = &avx512bf16::qlinear_gemm_bf16;
  }
  if (f.avx512_vnni != 0) {
    t.qlinear_a8_name = avx512vnni::qlinear_a8_name;
    t.qlinear_a8 = &avx512vnni::qlinear_a8;
    t.quantize_activations = &avx512vnni::quantize_activations;
  } else {
    t.qlinear_a8_name = avx2::qlinear_a8_name;
    t.qlinear_a8 = &avx2::qlinear_a8;
    t.quantize_activations = &avx2::quantize_activations;
  }
  t.linear_block = &avx512::linear_block;
  t.exit_gate = &avx512::exit_gate;
  t.exit_gate_head = &avx512::exit_gate_head;
  return t;
}
#endif

}  // namespace

const KernelTable& active_kernels() {
  static_assert(TC_ISA_SCALAR == 0 && TC_ISA_AVX2 == 1 && TC_ISA_AVX512 == 2, "tables are indexed by tc_isa");
  // Filled at the first kernel call, not at load: TC_QLINEAR_BF16_GEMM is read then.
  static const KernelTable tables[TC_ISA_COUNT] = {
      scalar_kernels(),
#ifdef TC_HAVE_X86_VARIANTS
      avx2_kernels(),
      avx512_kernels(),
#endif
  };
  return tables[g_isa.load(std::memory_order_relaxed)];
}

}  // namespace tcompress

extern "C" {

const char* tc_isa_name(int isa) {
  switch (isa) {
    case TC_ISA_SCALAR: return "scalar";
    case TC_ISA_AVX2: return "avx2";
    case TC_ISA_AVX512: return "avx512";
    default: return nullptr;
  }
}

int tc_isa_built(int isa) { return tcompress::built(isa); }

int tc_isa_supported(int isa) { return tcompress::built(isa) && tcompress::cpu_supports(isa); }

int tc_isa_best(void) { return tcompress::best_isa(); }

int tc_isa_get(void) { return tcompress::g_isa.load(); }

int tc_isa_set(int isa) {
  if (!tc_isa_supported(isa)) return TC_ERR_ISA_UNAVAILABLE;
  tcompress::g_isa.store(isa);
  return TC_OK;
}

}  // extern "C"
