// Load / store one vector (V::W elements) of a row stored as fp32, fp16 or bf16, converting to / from fp32.
// Included inside tcompress::<isa>::(anonymous) by each kernel header, after the vector types (simd_*.h).
#pragma once
#ifndef TC_ISA_NS
#error "define TC_ISA_NS before including elem_io.h"
#endif

#include <stdint.h>

#include "tcompress/status.h"

namespace tcompress {
namespace TC_ISA_NS {
namespace {

template <class V, int DT>
inline typename V::T load_elems(const void* row, int64_t i) {
  if constexpr (DT == TC_FLOAT32) {
    return V::load(static_cast<const float*>(row) + i);
  } else if constexpr (DT == TC_FLOAT16) {
    return V::load_f16(static_cast<const uint16_t*>(row) + i);
  } else {
    return V::load_bf16(static_cast<const uint16_t*>(row) + i);
  }
}

template <class V, int DT>
inline void store_elems(void* row, int64_t i, typename V::T v) {
  if constexpr (DT == TC_FLOAT32) {
    V::store(static_cast<float*>(row) + i, v);
  } else if constexpr (DT == TC_FLOAT16) {
    V::store_f16(static_cast<uint16_t*>(row) + i, v);
  } else {
    V::store_bf16(static_cast<uint16_t*>(row) + i, v);
  }
}

}  // namespace
}  // namespace TC_ISA_NS
}  // namespace tcompress
