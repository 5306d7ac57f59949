// Status code -> Python exception, shared by every binding file. `context` names the call and its arguments.
#pragma once

#include <pybind11/pybind11.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "tcompress/status.h"

namespace tcompress_bindings {

// CPU kernels: out of memory -> MemoryError, an unavailable ISA -> RuntimeError, anything else -> ValueError.
[[noreturn]] inline void raise_status(int status, const std::string& context) {
  std::ostringstream msg;
  msg << context << ": " << tc_status_message(status) << " (status " << status << ")";
  switch (status) {
    case TC_ERR_OUT_OF_MEMORY:
      PyErr_SetString(PyExc_MemoryError, msg.str().c_str());
      throw pybind11::error_already_set();
    case TC_ERR_ISA_UNAVAILABLE: throw std::runtime_error(msg.str());
    default: throw pybind11::value_error(msg.str());
  }
}

}  // namespace tcompress_bindings
