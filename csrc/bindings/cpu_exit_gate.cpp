// tcompress._C bindings of the exit_gate kernels (see tcompress/exit_gate.h): pointers in (as integers), status
// codes turned into Python exceptions out. A row without a softmax (NaN, +inf, all -inf) is a ValueError naming
// the first such row. Every call releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "tcompress/exit_gate.h"
#include "tcompress/status.h"
#include "register.h"
#include "status_error.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

const char* bad_row_words(int kind) {
  switch (kind) {
    case TC_EXIT_BAD_NAN: return "holds NaN";
    case TC_EXIT_BAD_POSINF: return "holds +inf";
    case TC_EXIT_BAD_ALL_NEGINF: return "is all -inf";
    default: return "has no softmax";
  }
}

void exit_gate(uintptr_t logits, int dtype, int64_t rows, int64_t vocab, int64_t row_stride, int criterion,
               double threshold, uintptr_t confidence, uintptr_t exit_mask, uintptr_t argmax, int num_threads) {
  int status;
  int64_t bad_row = -1;
  int bad_kind = 0;
  {
    py::gil_scoped_release release;
    status = tc_exit_gate_cpu(ptr<const void>(logits), dtype, rows, vocab, row_stride, criterion,
                              static_cast<float>(threshold), ptr<float>(confidence), ptr<uint8_t>(exit_mask),
                              ptr<int64_t>(argmax), &bad_row, &bad_kind, num_threads);
  }
  if (status == TC_ERR_NOT_FINITE) {
    std::ostringstream msg;
    msg << "exit_gate: logits row " << bad_row << " " << bad_row_words(bad_kind)
        << " (the first such row; a row without a softmax is an error, not an exit)";
    throw py::value_error(msg.str());
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.exit_gate(rows=" << rows << ", vocab=" << vocab << ", row_stride=" << row_stride
        << ", dtype=" << dtype << ", criterion=" << criterion << ", threshold=" << threshold << ")";
    raise_status(status, ctx.str());
  }
}

void exit_gate_head(uintptr_t hidden, uintptr_t weight, int dtype, int64_t vocab, int64_t d,
                    int64_t weight_row_stride, uintptr_t bias, int criterion, double threshold, uintptr_t confidence,
                    uintptr_t exit_mask, uintptr_t argmax, int num_threads) {
  int status;
  int bad_kind = 0;
  {
    py::gil_scoped_release release;
    status = tc_exit_gate_head_cpu(ptr<const float>(hidden), ptr<const void>(weight), dtype, vocab, d,
                                   weight_row_stride, ptr<const float>(bias), criterion,
                                   static_cast<float>(threshold), ptr<float>(confidence), ptr<uint8_t>(exit_mask),
                                   ptr<int64_t>(argmax), &bad_kind, num_threads);
  }
  if (status == TC_ERR_NOT_FINITE) {
    std::ostringstream msg;
    msg << "exit_gate_head: the logits (hidden @ weight^T) row 0 " << bad_row_words(bad_kind)
        << " (a row without a softmax is an error, not an exit)";
    throw py::value_error(msg.str());
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.exit_gate_head(vocab=" << vocab << ", d=" << d << ", weight_row_stride=" << weight_row_stride
        << ", dtype=" << dtype << ", criterion=" << criterion << ", threshold=" << threshold << ")";
    raise_status(status, ctx.str());
  }
}

}  // namespace

void bind_cpu_exit_gate(pybind11::module_& m) {
  m.attr("EXIT_GATE_CHUNK") = int(TC_EXIT_GATE_CHUNK);
  m.def("exit_gate", &exit_gate, py::arg("logits"), py::arg("dtype"), py::arg("rows"), py::arg("vocab"),
        py::arg("row_stride"), py::arg("criterion"), py::arg("threshold"), py::arg("confidence"),
        py::arg("exit_mask"), py::arg("argmax"), py::arg("num_threads"),
        "Per-row softmax confidence, exit mask and argmax of logits (rows x vocab), in one pass "
        "(tcompress/exit_gate.h). ValueError names the first row with NaN, +inf or only -inf. Releases the GIL.");
  m.def("exit_gate_head", &exit_gate_head, py::arg("hidden"), py::arg("weight"), py::arg("dtype"), py::arg("vocab"),
        py::arg("d"), py::arg("weight_row_stride"), py::arg("bias"), py::arg("criterion"), py::arg("threshold"),
        py::arg("confidence"), py::arg("exit_mask"), py::arg("argmax"), py::arg("num_threads"),
        "The gate of hidden @ weight^T (+ bias) for one token, without storing the logits. Releases the GIL.");
}

}  // namespace tcompress_bindings
