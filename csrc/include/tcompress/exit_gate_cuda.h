/* CUDA entry point of the exit gate: the contract of tcompress/exit_gate.h with device pointers, a device index
 * and a CUDA stream (cudaStream_t as void*; NULL is the legacy default stream). Only enqueues work.
 *
 * A bad row (NaN, +inf, all -inf) is found by the kernel, which cannot return it without a synchronization: it
 * stores atomicMin(row * 4 + kind) into `device_bad`, a device int64 that the caller set to INT64_MAX beforehand
 * and reads back (so the first bad row wins). Returns a tc_status for what is known on the host: the argument
 * checks, TC_ERR_NO_DEVICE, or TC_ERR_CUDA (tc_cuda_last_error() says which call failed). */
#ifndef TCOMPRESS_EXIT_GATE_CUDA_H
#define TCOMPRESS_EXIT_GATE_CUDA_H

#include <stdint.h>

#include "tcompress/exit_gate.h"
#include "tcompress/status.h"

#ifdef __cplusplus
extern "C" {
#endif

int tc_exit_gate_cuda(const void* logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride, int criterion,
                      float threshold, float* confidence, uint8_t* exit_mask, int64_t* argmax, int64_t* device_bad,
                      int device, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* TCOMPRESS_EXIT_GATE_CUDA_H */
