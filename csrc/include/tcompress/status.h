/* Status codes and element-type codes shared by every tcompress kernel (CPU and CUDA).
 *
 * The native API takes raw pointers, sizes and strides and never throws: every entry point returns a status
 * code, which the Python binding turns into an exception naming the call and its arguments. */
#ifndef TCOMPRESS_STATUS_H
#define TCOMPRESS_STATUS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tc_status {
  TC_OK = 0,
  TC_ERR_NULL_POINTER = 1,   /* a required pointer was null */
  TC_ERR_BAD_SIZE = 2,       /* a size is negative, zero where it must not be, or has no supported factorization */
  TC_ERR_BAD_STRIDE = 3,     /* rows would overlap, or a stride is negative */
  TC_ERR_BAD_DTYPE = 4,      /* unknown element-type code */
  TC_ERR_OUT_OF_MEMORY = 5,  /* a scratch allocation failed */
  TC_ERR_ISA_UNAVAILABLE = 6,/* the requested CPU instruction set is not built in or not supported by this CPU */
  TC_ERR_BAD_ARGUMENT = 7,   /* any other invalid argument (e.g. a matrix entry that is not +-1, aliasing) */
  TC_ERR_CUDA = 8,           /* a CUDA runtime call failed */
  TC_ERR_NO_DEVICE = 9,      /* no CUDA device (or no driver) is present */
  TC_ERR_NOT_FINITE = 10     /* an input that must be finite holds NaN or Inf */
};

/* Element types of the tensors a kernel reads and writes. Arithmetic is always fp32. */
enum tc_dtype {
  TC_FLOAT32 = 0,
  TC_FLOAT16 = 1,
  TC_BFLOAT16 = 2
};

static inline const char* tc_status_message(int status) {
  switch (status) {
    case TC_OK: return "ok";
    case TC_ERR_NULL_POINTER: return "a required pointer is null";
    case TC_ERR_BAD_SIZE: return "unsupported size";
    case TC_ERR_BAD_STRIDE: return "invalid row stride (rows would overlap)";
    case TC_ERR_BAD_DTYPE: return "unknown dtype code";
    case TC_ERR_OUT_OF_MEMORY: return "out of memory allocating scratch space";
    case TC_ERR_ISA_UNAVAILABLE: return "instruction set not available on this CPU or not built";
    case TC_ERR_BAD_ARGUMENT: return "invalid argument";
    case TC_ERR_CUDA: return "CUDA runtime error";
    case TC_ERR_NO_DEVICE: return "no CUDA device";
    case TC_ERR_NOT_FINITE: return "input holds NaN or Inf";
    default: return "unknown status";
  }
}

static inline int tc_dtype_size(int dtype) {
  switch (dtype) {
    case TC_FLOAT32: return 4;
    case TC_FLOAT16: return 2;
    case TC_BFLOAT16: return 2;
    default: return 0;
  }
}

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_STATUS_H */
