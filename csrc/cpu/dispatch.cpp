// Which kernel variant runs: the best one this CPU supports, chosen once at load, or the one tc_isa_set() forces.
#include <atomic>

#include "kernel_table.h"
#include "tcompress/isa.h"
#include "tcompress/status.h"

namespace tcompress {

namespace {

const KernelTable* table_for(int isa) {
  switch (isa) {
    case TC_ISA_SCALAR: return &scalar::kernels;
#ifdef TC_HAVE_X86_VARIANTS
    case TC_ISA_AVX2: return &avx2::kernels;
    case TC_ISA_AVX512: return &avx512::kernels;
#endif
    default: return nullptr;
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
    if (table_for(isa) && cpu_supports(isa)) return isa;
  }
  return TC_ISA_SCALAR;
}

std::atomic<int> g_isa{best_isa()};

}  // namespace

const KernelTable& active_kernels() { return *table_for(g_isa.load(std::memory_order_relaxed)); }

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

int tc_isa_built(int isa) { return tcompress::table_for(isa) != nullptr; }

int tc_isa_supported(int isa) { return tcompress::table_for(isa) != nullptr && tcompress::cpu_supports(isa); }

int tc_isa_best(void) { return tcompress::best_isa(); }

int tc_isa_get(void) { return tcompress::g_isa.load(); }

int tc_isa_set(int isa) {
  if (!tc_isa_supported(isa)) return TC_ERR_ISA_UNAVAILABLE;
  tcompress::g_isa.store(isa);
  return TC_OK;
}

}  // extern "C"
