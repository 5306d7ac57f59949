// Runs tc_hadamard_cpu on buffers allocated with their exact sizes, for every dtype, a spread of k and p,
// odd row counts, out of place and in place, on the ISA given as argv[1] (0 scalar, 1 avx2, 2 avx512).
// Under valgrind (which has no AVX-512), any read or write outside an allocation - ours or the caller's -
// is reported; this is how a GCC vectorizer over-read of the scratch row was found.
// Usage: hadamard_memcheck ISA [MAX_N]. Exit 0: all calls returned TC_OK; 1: a call failed; 2: ISA unsupported.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tcompress/hadamard.h"
#include "tcompress/isa.h"
#include "tcompress/status.h"

int main(int argc, char** argv) {
  const int isa = argc > 1 ? atoi(argv[1]) : 0;
  const int64_t max_n = argc > 2 ? atoll(argv[2]) : 8192;
  if (tc_isa_set(isa) != TC_OK) {
    printf("ISA %d is not supported here\n", isa);
    return 2;
  }
  const int64_t ks[] = {1, 2, 4, 12, 20, 28, 36, 52, 60, 108, 148, 172, 256};
  int failed = 0, calls = 0;
  for (int64_t k : ks) {
    for (int64_t p = 1; k * p <= max_n; p *= 2) {
      const int64_t n = k * p;
      for (int dtype = TC_FLOAT32; dtype <= TC_BFLOAT16; ++dtype) {
        for (int64_t rows = 1; rows <= 3; rows += 2) {
          const int64_t bytes = rows * n * tc_dtype_size(dtype);
          unsigned char* x = static_cast<unsigned char*>(malloc(bytes));
          unsigned char* out = static_cast<unsigned char*>(malloc(bytes));
          // Byte patterns below 0x40 in every byte are finite numbers in all three formats.
          for (int64_t i = 0; i < bytes; ++i) x[i] = static_cast<unsigned char>((i * 7 + 1) & 0x3f);
          float* hk = k > 1 ? static_cast<float*>(malloc(k * k * sizeof(float))) : nullptr;
          for (int64_t i = 0; hk && i < k * k; ++i) hk[i] = ((i * 2654435761u) >> 7) & 1 ? 1.0f : -1.0f;
          const int a = tc_hadamard_cpu(x, out, rows, n, n, n, dtype, hk, k, 0.5f, 2);
          const int b = tc_hadamard_cpu(out, out, rows, n, n, n, dtype, hk, k, 0.5f, 2);
          if (a != TC_OK || b != TC_OK) {
            printf("k=%lld p=%lld dtype=%d rows=%lld: status %d / %d\n", (long long)k, (long long)p, dtype,
                   (long long)rows, a, b);
            ++failed;
          }
          calls += 2;
          free(x);
          free(out);
          free(hk);
        }
      }
    }
  }
  printf("ISA %d: %d calls, %d failed\n", isa, calls, failed);
  return failed ? 1 : 0;
}
