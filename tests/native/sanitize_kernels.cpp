// Every CPU kernel family through its C API, built with AddressSanitizer + UndefinedBehaviorSanitizer
// (tests/native/CMakeLists.txt, TC_SANITIZE=ON): hadamard, quantize / pack / unpack / dequantize, qlinear,
// qlinear_a8 (+ activation quantization and the integer accumulators), linear_block, exit_gate (+ the fused head).
//
// Buffers are allocated with their exact sizes and start 4 bytes into their block (element-aligned, unaligned for
// the vector loads; 8 for int64 outputs), so
// any read or write past either end is an ASan report; shapes hit vector tails (sizes just off multiples of 8, 16,
// 32, 64), odd row counts, row strides longer than rows, both the GEMV and the GEMM paths (rows on both sides of
// each kernel's threshold) and the threaded paths (1 and 2 threads; the exit gate splits a row's vocabulary when
// rows < threads). Values are finite (bytes < 0x40 are finite in fp32, fp16 and bf16). Numerics are the Python
// tests' business (every kernel against its pure-torch reference); here every call must return TC_OK and touch
// only its own memory.
//
// Usage: sanitize_kernels ISA... (0 scalar, 1 avx2, 2 avx512). Exit 0: every call returned TC_OK; 1: a call
// failed; 2: an ISA is not supported. A sanitizer finding aborts the process with its report.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "tcompress/exit_gate.h"
#include "tcompress/hadamard.h"
#include "tcompress/isa.h"
#include "tcompress/linear_block.h"
#include "tcompress/qlinear.h"
#include "tcompress/qlinear_a8.h"
#include "tcompress/quant.h"
#include "tcompress/status.h"

namespace {

int g_calls = 0, g_failed = 0;

// An allocation of exactly `bytes` usable bytes starting `offset` bytes into a malloc block of offset + bytes.
struct Buffer {
  unsigned char* block = nullptr;
  unsigned char* data = nullptr;
  Buffer(int64_t bytes, int offset, unsigned char fill) {
    block = static_cast<unsigned char*>(malloc(static_cast<size_t>(bytes + offset) + (bytes + offset == 0)));
    data = block + offset;
    for (int64_t i = 0; i < bytes; ++i) data[i] = static_cast<unsigned char>((fill + i * 7) & 0x3f);
  }
  ~Buffer() { free(block); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(data);
  }
};

void check(int status, const char* what) {
  ++g_calls;
  if (status != TC_OK) {
    ++g_failed;
    if (g_failed <= 20) printf("FAILED (status %d): %s\n", status, what);
  }
}

// Byte offsets of a buffer's start: 0 (malloc's 16-byte alignment) and 4 (element-aligned for every type the
// kernels read as 4 bytes or less, but not aligned for any vector load), as a slice of a tensor can be.
const int kOffsets[] = {0, 4};

void hadamard(int threads) {
  const int64_t ks[] = {1, 12, 20, 28};
  for (int64_t k : ks) {
    float hk_storage[28 * 28];
    for (int64_t i = 0; i < k * k; ++i) hk_storage[i] = ((i * 2654435761u) >> 7) & 1 ? 1.0f : -1.0f;
    for (int64_t p = 1; k * p <= 2048; p *= 4) {
      const int64_t n = k * p;
      for (int dtype = TC_FLOAT32; dtype <= TC_BFLOAT16; ++dtype) {
        for (int64_t rows : {1, 3}) {
          for (int64_t pad : {0, 3}) {
            const int64_t stride = n + pad, es = tc_dtype_size(dtype);
            const int64_t bytes = ((rows - 1) * stride + n) * es;
            for (int offset : kOffsets) {
              Buffer x(bytes, offset, 1), out(bytes, offset, 2);
              char what[160];
              snprintf(what, sizeof what, "hadamard k=%lld n=%lld dtype=%d rows=%lld stride=%lld", (long long)k,
                       (long long)n, dtype, (long long)rows, (long long)stride);
              const float* hk = k > 1 ? hk_storage : nullptr;
              check(tc_hadamard_cpu(x.data, out.data, rows, n, stride, stride, dtype, hk, k, 0.5f, threads), what);
              check(tc_hadamard_cpu(out.data, out.data, rows, n, stride, stride, dtype, hk, k, 0.5f, threads), what);
            }
          }
        }
      }
    }
  }
}

void quantize(int threads) {
  for (int64_t out_f : {1, 3, 17}) {
    for (int64_t in_f : {2, 8, 30, 62, 130, 576}) {
      for (int bits : {4, 8}) {
        for (int64_t group : {int64_t(0), int64_t(2), in_f / 2}) {
          if (group && (in_f % group || group % 2)) continue;
          for (int symmetric : {0, 1}) {
            for (int w_dtype = TC_FLOAT32; w_dtype <= TC_BFLOAT16; ++w_dtype) {
              const int scale_dtype = (w_dtype + bits) % 3;
              const int64_t groups = group ? in_f / group : 1, stride = in_f + 5;
              const int64_t w_bytes = ((out_f - 1) * stride + in_f) * tc_dtype_size(w_dtype);
              Buffer w(w_bytes, 4, 3), codes(out_f * in_f, 4, 0);
              Buffer scales(out_f * groups * tc_dtype_size(scale_dtype), 4, 0);
              Buffer zeros(symmetric ? 0 : out_f * groups, 4, 0);
              char what[160];
              snprintf(what, sizeof what, "quantize %lldx%lld bits=%d group=%lld sym=%d w=%d s=%d", (long long)out_f,
                       (long long)in_f, bits, (long long)group, symmetric, w_dtype, scale_dtype);
              check(tc_quantize_cpu(w.data, w_dtype, out_f, in_f, stride, bits, group, symmetric,
                                    codes.as<uint8_t>(), scales.data, scale_dtype,
                                    symmetric ? nullptr : zeros.as<uint8_t>(), threads),
                    what);
              Buffer packed(bits == 4 ? out_f * (in_f / 2) : 0, 4, 0);
              if (bits == 4) {
                for (int64_t i = 0; i < out_f * in_f; ++i) codes.data[i] &= 0x0f;
                check(tc_pack_int4_cpu(codes.as<uint8_t>(), packed.as<uint8_t>(), out_f, in_f, in_f, in_f / 2,
                                       threads),
                      what);
                Buffer unpacked(out_f * in_f, 4, 0);
                check(tc_unpack_int4_cpu(packed.as<uint8_t>(), unpacked.as<uint8_t>(), out_f, in_f, in_f / 2, in_f,
                                         threads),
                      what);
              }
              for (int out_dtype = TC_FLOAT32; out_dtype <= TC_BFLOAT16; ++out_dtype) {
                const int64_t out_stride = in_f + 3;
                Buffer deq(((out_f - 1) * out_stride + in_f) * tc_dtype_size(out_dtype), 4, 0);
                const bool use_packed = bits == 4 && out_dtype == TC_FLOAT16;
                check(tc_dequantize_cpu(use_packed ? packed.as<uint8_t>() : codes.as<uint8_t>(),
                                        use_packed ? TC_CODES_INT4_PACKED : TC_CODES_UINT8, out_f, in_f,
                                        use_packed ? in_f / 2 : in_f, scales.data, scale_dtype,
                                        symmetric ? nullptr : zeros.as<uint8_t>(), bits, group, deq.data, out_dtype,
                                        out_stride, threads),
                      what);
              }
            }
          }
        }
      }
    }
  }
}

// qlinear and qlinear_a8 share the weight layout: one set of shapes for both.
void qlinear(int threads) {
  for (int64_t K : {2, 8, 66, 128, 130, 576}) {
    for (int64_t N : {1, 3, 17, 64}) {
      for (int bits : {4, 8}) {
        // Groups of 32 and 64: the shapes of qlinear_a8's decode row kernel (K a multiple of 64).
        for (int64_t group : {int64_t(0), int64_t(2), int64_t(32), int64_t(64), K / 2}) {
          if (group && (K % group || group % 2)) continue;
          const int64_t groups = group ? K / group : 1;
          const int64_t packed_k = bits == 4 ? K / 2 : K;
          for (int asym : {0, 1}) {
            const int scale_dtype = (bits + asym + static_cast<int>(K)) % 3;
            Buffer qweight(N * packed_k, 4, 4), scales(N * groups * tc_dtype_size(scale_dtype), 4, 0x3c);
            Buffer zeros(asym ? N * groups : 0, 4, 8);
            for (int64_t M : {1, 2, 3, 4, 5, 9, 17, 33, 65}) {
              const int x_dtype = static_cast<int>(M % 3);
              const int64_t x_stride = K + (M % 2 ? 3 : 0), y_stride = N + (M % 2 ? 0 : 5);
              Buffer x(((M - 1) * x_stride + K) * tc_dtype_size(x_dtype), 4, 5);
              Buffer y(((M - 1) * y_stride + N) * tc_dtype_size(x_dtype), 4, 0);
              Buffer bias(N * 4, 4, 6);
              const void* b = M % 4 ? bias.data : nullptr;
              const uint8_t* z = asym ? zeros.as<uint8_t>() : nullptr;
              char what[200];
              snprintf(what, sizeof what, "qlinear M=%lld K=%lld N=%lld bits=%d group=%lld asym=%d x=%d s=%d",
                       (long long)M, (long long)K, (long long)N, bits, (long long)group, asym, x_dtype, scale_dtype);
              check(tc_qlinear_cpu(x.data, x_dtype, M, K, x_stride, qweight.as<uint8_t>(), N, bits, scales.data,
                                   scale_dtype, z, group, b, TC_FLOAT32, y.data, y_stride, threads),
                    what);
              for (int act_bits : {8, 4}) {
                for (int per_group : {0, 1}) {
                  check(tc_qlinear_a8_cpu(x.data, x_dtype, M, K, x_stride, qweight.as<uint8_t>(), N, bits,
                                          scales.data, scale_dtype, z, group, act_bits, per_group, b, TC_FLOAT32,
                                          y.data, y_stride, threads),
                        what);
                }
              }
              Buffer codes(M * K, 4, 0), act_scales(M * 4, 4, 0);
              check(tc_quantize_activations_cpu(x.data, x_dtype, M, K, x_stride, 8, codes.as<int8_t>(),
                                                act_scales.as<float>(), threads),
                    what);
              Buffer acc(M * N * groups * 4, 4, 0);
              check(tc_qlinear_a8_accumulators_cpu(codes.as<int8_t>(), M, K, qweight.as<uint8_t>(), N, bits, z, group,
                                                   acc.as<int32_t>(), threads),
                    what);
            }
          }
        }
      }
    }
  }
}

void linear_block(int threads) {
  for (int64_t d : {1, 3, 16, 65, 576}) {
    for (int64_t r : {1, 3, 8, 33}) {
      for (int factor_dtype = TC_FLOAT32; factor_dtype <= TC_LINEAR_BLOCK_INT8; ++factor_dtype) {
        const int64_t fs = factor_dtype == TC_LINEAR_BLOCK_INT8 ? 1 : tc_dtype_size(factor_dtype);
        Buffer U(d * r * fs, 4, 9), V(r * d * fs, 4, 10);
        Buffer u_scale(r * 4, 4, 0x3c), v_scale(d * 4, 4, 0x3c), b(d * 2, 4, 11), mu(d * 2, 4, 12);
        const bool int8 = factor_dtype == TC_LINEAR_BLOCK_INT8;
        for (int64_t M : {1, 2, 7, 8, 9, 17, 33}) {
          const int x_dtype = static_cast<int>((M + factor_dtype) % 3);
          const int64_t x_stride = d + (M % 2 ? 2 : 0), y_stride = d + (M % 3 ? 0 : 4);
          Buffer x(((M - 1) * x_stride + d) * tc_dtype_size(x_dtype), 4, 13);
          Buffer y(((M - 1) * y_stride + d) * tc_dtype_size(x_dtype), 4, 0);
          char what[160];
          snprintf(what, sizeof what, "linear_block M=%lld d=%lld r=%lld factor=%d x=%d", (long long)M, (long long)d,
                   (long long)r, factor_dtype, x_dtype);
          check(tc_linear_block_cpu(x.data, x_dtype, M, d, x_stride, U.data, V.data, factor_dtype, r,
                                    int8 ? u_scale.as<float>() : nullptr, int8 ? v_scale.as<float>() : nullptr, b.data,
                                    TC_FLOAT16, mu.data, TC_BFLOAT16, y.data, y_stride, threads),
                what);
        }
      }
    }
  }
}

void exit_gate(int threads) {
  for (int64_t vocab : {1, 2, 7, 64, 1000, 1025, 4099}) {
    for (int dtype = TC_FLOAT32; dtype <= TC_BFLOAT16; ++dtype) {
      for (int64_t rows : {0, 1, 2, 5, 33}) {
        const int64_t stride = vocab + (rows % 2 ? 3 : 0);
        Buffer logits(rows ? ((rows - 1) * stride + vocab) * tc_dtype_size(dtype) : 0, 4, 14);
        Buffer confidence(rows * 4, 4, 0), mask(rows, 4, 0), argmax(rows * 8, 8, 0);
        for (int criterion = TC_EXIT_MAX_PROB; criterion <= TC_EXIT_ENTROPY; ++criterion) {
          int64_t bad_row = -1;
          int bad_kind = 0;
          char what[160];
          snprintf(what, sizeof what, "exit_gate vocab=%lld dtype=%d rows=%lld criterion=%d", (long long)vocab, dtype,
                   (long long)rows, criterion);
          check(tc_exit_gate_cpu(logits.data, dtype, rows, vocab, stride, criterion, 0.5f, confidence.as<float>(),
                                 mask.as<uint8_t>(), rows % 2 ? argmax.as<int64_t>() : nullptr, &bad_row, &bad_kind,
                                 threads),
                what);
        }
      }
      for (int64_t d : {1, 3, 64, 65}) {
        const int64_t stride = d + (vocab % 2);
        Buffer hidden(d * 4, 4, 15), weight(((vocab - 1) * stride + d) * tc_dtype_size(dtype), 4, 16);
        Buffer bias(vocab * 4, 4, 17), confidence(4, 4, 0), mask(1, 4, 0), argmax(8, 8, 0);
        int bad_kind = 0;
        char what[160];
        snprintf(what, sizeof what, "exit_gate_head vocab=%lld d=%lld dtype=%d", (long long)vocab, (long long)d, dtype);
        check(tc_exit_gate_head_cpu(hidden.as<float>(), weight.data, dtype, vocab, d, stride,
                                    d % 2 ? bias.as<float>() : nullptr, TC_EXIT_ENTROPY, 2.0f, confidence.as<float>(),
                                    mask.as<uint8_t>(), argmax.as<int64_t>(), &bad_kind, threads),
              what);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    printf("usage: %s ISA... (0 scalar, 1 avx2, 2 avx512)\n", argv[0]);
    return 2;
  }
  for (int a = 1; a < argc; ++a) {
    const int isa = atoi(argv[a]);
    if (tc_isa_set(isa) != TC_OK) {
      printf("ISA %d is not supported here\n", isa);
      return 2;
    }
    const int before = g_calls;
    for (int threads : {1, 2}) {
      hadamard(threads);
      quantize(threads);
      qlinear(threads);
      linear_block(threads);
      exit_gate(threads);
    }
    printf("ISA %s: %d calls\n", tc_isa_name(isa), g_calls - before);
  }
  printf("%d calls, %d failed\n", g_calls, g_failed);
  return g_failed ? 1 : 0;
}
