// raise_status (status_error.h) for the CUDA bindings: a failed CUDA call names the call and the runtime's error,
// a missing device says why there is none.
#pragma once

#include <string>

#include "status_error.h"
#include "tcompress/cuda_device.h"
#include "tcompress/status.h"

namespace tcompress_bindings {

[[noreturn]] inline void raise_cuda_status(int status, const std::string& context) {
  const char* detail = nullptr;
  if (status == TC_ERR_CUDA) detail = tc_cuda_last_error();
  if (status == TC_ERR_NO_DEVICE) detail = tc_cuda_status_string();
  raise_status(status, context, detail);
}

}  // namespace tcompress_bindings
