// CPUID/XGETBV feature detection. Compiled without ISA flags: it must run on any x86-64 CPU.
#include <string.h>

#include "tcompress/isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

namespace {

void cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
  r[0] = r[1] = r[2] = r[3] = 0;
  __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
}

unsigned long long xgetbv0() {
  unsigned lo, hi;
  // xgetbv with ecx = 0 reads XCR0: which register states the OS saves on a context switch.
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

bool bit(unsigned v, int b) { return (v >> b) & 1u; }

void detect(tc_cpu_features* f) {
  memset(f, 0, sizeof(*f));
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 1) return;

  cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  f->sse42 = bit(ecx1, 20);
  const bool osxsave = bit(ecx1, 27);
  // A feature counts only if the OS saves its registers: XMM|YMM for AVX, plus opmask|ZMM_Hi256|Hi16_ZMM for
  // AVX-512, plus the tile state for AMX. Without this check a hypervisor that hides AVX state would crash us.
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;

  f->avx = os_avx && bit(ecx1, 28);
  f->fma = f->avx && bit(ecx1, 12);
  f->f16c = f->avx && bit(ecx1, 29);
  if (max_leaf < 7) return;

  cpuid(7, 0, r);
  const unsigned ebx7 = r[1], ecx7 = r[2], edx7 = r[3];
  f->avx2 = f->avx && bit(ebx7, 5);
  f->bmi2 = bit(ebx7, 8);
  f->avx512f = os_avx512 && bit(ebx7, 16);
  f->avx512dq = f->avx512f && bit(ebx7, 17);
  f->avx512cd = f->avx512f && bit(ebx7, 28);
  f->avx512bw = f->avx512f && bit(ebx7, 30);
  f->avx512vl = f->avx512f && bit(ebx7, 31);
  f->avx512_vnni = f->avx512f && bit(ecx7, 11);
  f->avx512_fp16 = f->avx512f && bit(edx7, 23);
  f->amx_bf16 = os_amx && bit(edx7, 22);
  f->amx_tile = os_amx && bit(edx7, 24);
  f->amx_int8 = os_amx && bit(edx7, 25);

  cpuid(7, 1, r);
  const unsigned eax71 = r[0];
  f->avx_vnni = f->avx2 && bit(eax71, 4);
  f->avx512_bf16 = f->avx512f && bit(eax71, 5);
}

}  // namespace

extern "C" void tc_cpu_features_get(tc_cpu_features* out) {
  static tc_cpu_features cached;
  static bool done = false;  // detection is idempotent, so a benign race only repeats it
  if (!done) {
    detect(&cached);
    done = true;
  }
  *out = cached;
}

#else  // not x86: only the portable kernels exist

extern "C" void tc_cpu_features_get(tc_cpu_features* out) { memset(out, 0, sizeof(*out)); }

#endif
