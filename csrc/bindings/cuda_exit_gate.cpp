// tcompress._cuda bindings of the exit gate (see tcompress/exit_gate_cuda.h): device pointers, a device index and a
// stream handle in, as integers; status codes turned into Python exceptions out. The call only enqueues work; a
// bad row comes back through the caller's device word (the Python layer reads it). Releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>

#include "tcompress/exit_gate_cuda.h"
#include "tcompress/status.h"
#include "cuda_status_error.h"
#include "register.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void exit_gate(uintptr_t logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride, int criterion,
               double threshold, uintptr_t confidence, uintptr_t exit_mask, uintptr_t argmax, uintptr_t device_bad,
               int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_exit_gate_cuda(ptr<const void>(logits), dtype, rows, vocab, row_stride, criterion,
                               static_cast<float>(threshold), ptr<float>(confidence), ptr<uint8_t>(exit_mask),
                               ptr<int64_t>(argmax), ptr<int64_t>(device_bad), device, ptr<void>(stream));
  }
  if (status == TC_OK) return;
  std::ostringstream ctx;
  ctx << "tcompress._cuda.exit_gate(rows=" << rows << ", vocab=" << vocab << ", row_stride=" << row_stride
      << ", dtype=" << dtype << ", criterion=" << criterion << ", device=" << device << ")";
  raise_cuda_status(status, ctx.str());
}

}  // namespace

void bind_cuda_exit_gate(pybind11::module_& m) {
  m.def("exit_gate", &exit_gate, py::arg("logits"), py::arg("dtype"), py::arg("rows"), py::arg("vocab"),
        py::arg("row_stride"), py::arg("criterion"), py::arg("threshold"), py::arg("confidence"),
        py::arg("exit_mask"), py::arg("argmax"), py::arg("device_bad"), py::arg("device"), py::arg("stream"),
        "Enqueues the exit gate of logits (rows x vocab) on `stream`; the first bad row goes to device_bad "
        "(atomicMin of row * 4 + kind). Releases the GIL.");
}

}  // namespace tcompress_bindings
