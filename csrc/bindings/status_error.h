// Status code -> Python exception, shared by every binding file of both modules (_C and _cuda). `context` names
// the call and its arguments; `detail`, when given, is appended (the CUDA runtime's words: cuda_status_error.h).
#pragma once

#include <pybind11/pybind11.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "tcompress/status.h"

namespace tcompress_bindings {

// Out of memory -> MemoryError; an unavailable ISA, a failed CUDA call or no device -> RuntimeError; anything else
// (a bad argument) -> ValueError.
[[noreturn]] inline void raise_status(int status, const std::string& context, const char* detail = nullptr) {
  std::ostringstream msg;
  msg << context << ": " << tc_status_message(status) << " (status " << status << ")";
  if (detail != nullptr) msg << ": " << detail;
  switch (status) {
    case TC_ERR_OUT_OF_MEMORY:
      PyErr_SetString(PyExc_MemoryError, msg.str().c_str());
      throw pybind11::error_already_set();
    case TC_ERR_ISA_UNAVAILABLE:
    case TC_ERR_CUDA:
    case TC_ERR_NO_DEVICE: throw std::runtime_error(msg.str());
    default: throw pybind11::value_error(msg.str());
  }
}

}  // namespace tcompress_bindings
