// tcompress._C: the CPU kernels. Pointers in (as integers), status codes turned into Python exceptions out.
// No torch headers: the Python layer (tcompress.ops) validates tensors and passes data_ptr()s and strides.
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tcompress/hadamard.h"
#include "tcompress/isa.h"
#include "tcompress/status.h"
#include "register.h"
#include "status_error.h"

namespace py = pybind11;

namespace {

using tcompress_bindings::raise_status;

int isa_from_name(const std::string& name) {
  for (int isa = 0; isa < TC_ISA_COUNT; ++isa) {
    if (name == tc_isa_name(isa)) return isa;
  }
  std::ostringstream msg;
  msg << "unknown instruction set '" << name << "': expected one of scalar, avx2, avx512";
  throw py::value_error(msg.str());
}

py::dict cpu_features() {
  tc_cpu_features f;
  tc_cpu_features_get(&f);
  py::dict d;
  d["sse4_2"] = bool(f.sse42);
  d["avx"] = bool(f.avx);
  d["avx2"] = bool(f.avx2);
  d["fma"] = bool(f.fma);
  d["f16c"] = bool(f.f16c);
  d["bmi2"] = bool(f.bmi2);
  d["avx512f"] = bool(f.avx512f);
  d["avx512cd"] = bool(f.avx512cd);
  d["avx512bw"] = bool(f.avx512bw);
  d["avx512dq"] = bool(f.avx512dq);
  d["avx512vl"] = bool(f.avx512vl);
  d["avx512_vnni"] = bool(f.avx512_vnni);
  d["avx512_bf16"] = bool(f.avx512_bf16);
  d["avx512_fp16"] = bool(f.avx512_fp16);
  d["avx_vnni"] = bool(f.avx_vnni);
  d["amx_tile"] = bool(f.amx_tile);
  d["amx_int8"] = bool(f.amx_int8);
  d["amx_bf16"] = bool(f.amx_bf16);
  return d;
}

std::vector<std::string> isas(bool supported_only) {
  std::vector<std::string> names;
  for (int isa = 0; isa < TC_ISA_COUNT; ++isa) {
    if (supported_only ? tc_isa_supported(isa) : tc_isa_built(isa)) names.emplace_back(tc_isa_name(isa));
  }
  return names;
}

void set_isa(const std::string& name) {
  const int isa = isa_from_name(name);
  const int status = tc_isa_set(isa);
  if (status != TC_OK) {
    std::ostringstream msg;
    msg << "instruction set '" << name << "' is not available: "
        << (tc_isa_built(isa) ? "this CPU does not support it" : "this build does not contain it")
        << " (available: ";
    const auto names = isas(true);
    for (size_t i = 0; i < names.size(); ++i) msg << (i ? ", " : "") << names[i];
    msg << ")";
    throw std::runtime_error(msg.str());
  }
}

void hadamard(uintptr_t x, uintptr_t out, int64_t rows, int64_t n, int64_t x_row_stride, int64_t out_row_stride,
              int dtype, uintptr_t hk, int64_t k, double scale, int num_threads) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_hadamard_cpu(reinterpret_cast<const void*>(x), reinterpret_cast<void*>(out), rows, n, x_row_stride,
                             out_row_stride, dtype, reinterpret_cast<const float*>(hk), k, static_cast<float>(scale),
                             num_threads);
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._C.hadamard(rows=" << rows << ", n=" << n << ", k=" << k << ", x_row_stride=" << x_row_stride
        << ", out_row_stride=" << out_row_stride << ", dtype=" << dtype << ")";
    raise_status(status, ctx.str());
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tcompress CPU kernels (torch-free: raw pointers, sizes, strides, dtype codes)";

  m.attr("FLOAT32") = int(TC_FLOAT32);
  m.attr("FLOAT16") = int(TC_FLOAT16);
  m.attr("BFLOAT16") = int(TC_BFLOAT16);
  m.attr("HADAMARD_MAX_K") = int(TC_HADAMARD_MAX_K);
  m.attr("OPENMP_VERSION") = int(_OPENMP);

  m.def("cpu_features", &cpu_features, "CPU features reported by CPUID/XGETBV, OS register-state support included");
  m.def("built_isas", [] { return isas(false); }, "Kernel variants compiled into this module");
  m.def("supported_isas", [] { return isas(true); }, "Kernel variants this CPU can run");
  m.def("best_isa", [] { return std::string(tc_isa_name(tc_isa_best())); }, "The variant chosen at load");
  m.def("get_isa", [] { return std::string(tc_isa_name(tc_isa_get())); }, "The variant in use");
  m.def("set_isa", &set_isa, py::arg("name"), "Use another kernel variant (RuntimeError if unsupported)");
  m.def("max_threads", [] { return omp_get_max_threads(); }, "OpenMP's default thread count");

  m.def("hadamard", &hadamard, py::arg("x"), py::arg("out"), py::arg("rows"), py::arg("n"), py::arg("x_row_stride"),
        py::arg("out_row_stride"), py::arg("dtype"), py::arg("hk"), py::arg("k"), py::arg("scale"),
        py::arg("num_threads"),
        "out[r] = scale * x[r] @ kron(H_k, H_{n/k}) for `rows` rows (see tcompress/hadamard.h). Releases the GIL.");

  tcompress_bindings::bind_cpu_quant(m);
  tcompress_bindings::bind_cpu_qlinear(m);
  tcompress_bindings::bind_cpu_qlinear_a8(m);
  tcompress_bindings::bind_cpu_linear_block(m);
  tcompress_bindings::bind_cpu_exit_gate(m);
  tcompress_bindings::bind_cpu_decode(m);
}
