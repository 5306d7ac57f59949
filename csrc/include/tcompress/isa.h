/* CPU feature detection and the choice of kernel variant (instruction set).
 *
 * Every CPU kernel exists in a portable build ("scalar": plain C++, whatever the compiler vectorizes for the
 * baseline target) and, on x86-64, in AVX2 (x86-64-v3) and AVX-512 (x86-64-v4) builds. The best variant the
 * running CPU and OS support is selected at load; tc_isa_set() forces another one. */
#ifndef TCOMPRESS_ISA_H
#define TCOMPRESS_ISA_H

#ifdef __cplusplus
extern "C" {
#endif

enum tc_isa {
  TC_ISA_SCALAR = 0,
  TC_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
  TC_ISA_AVX512 = 2, /* AVX-512 F, CD, BW, DQ, VL (plus everything AVX2 needs) */
  TC_ISA_COUNT = 3
};

/* What CPUID and XGETBV say; each field is 0 or 1. OS support (saved register state) is folded in. */
typedef struct tc_cpu_features {
  int sse42, avx, avx2, fma, f16c, bmi2;
  int avx512f, avx512cd, avx512bw, avx512dq, avx512vl, avx512_vnni, avx512_bf16, avx512_fp16;
  int avx_vnni, amx_tile, amx_int8, amx_bf16;
} tc_cpu_features;

void tc_cpu_features_get(tc_cpu_features* out);

const char* tc_isa_name(int isa);           /* "scalar", "avx2", "avx512"; NULL for an unknown code */
int tc_isa_built(int isa);                  /* 1 if this binary contains that variant */
int tc_isa_supported(int isa);              /* 1 if built and supported by this CPU and OS */
int tc_isa_best(void);                      /* the best supported variant */
int tc_isa_get(void);                       /* the variant in use */
int tc_isa_set(int isa);                    /* TC_OK, or TC_ERR_ISA_UNAVAILABLE (and nothing changes) */

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_ISA_H */
