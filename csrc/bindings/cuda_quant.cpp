// tcompress._cuda bindings of the quant kernels (see tcompress/quant_cuda.h): device pointers, a device index and
// a stream handle (cudaStream_t) in, as integers; status codes turned into Python exceptions out. The calls only
// enqueue work; data errors come back through the caller's device status word. Every call releases the GIL.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>

#include "tcompress/quant_cuda.h"
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

void quantize(uintptr_t w, int w_dtype, int64_t out_features, int64_t in_features, int64_t w_row_stride, int bits,
              int64_t group_size, bool symmetric, uintptr_t codes, uintptr_t scales, int scale_dtype, uintptr_t zeros,
              uintptr_t device_status, int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_quantize_cuda(ptr<const void>(w), w_dtype, out_features, in_features, w_row_stride, bits, group_size,
                              symmetric ? 1 : 0, ptr<uint8_t>(codes), ptr<void>(scales), scale_dtype,
                              ptr<uint8_t>(zeros), ptr<int32_t>(device_status), device, ptr<void>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.quantize(out_features=" << out_features << ", in_features=" << in_features
        << ", bits=" << bits << ", group_size=" << group_size << ", symmetric=" << (symmetric ? "True" : "False")
        << ", device=" << device << ")";
    raise_cuda_status(status, ctx.str());
  }
}

void pack_int4(uintptr_t codes, uintptr_t packed, int64_t rows, int64_t n, int64_t codes_row_stride,
               int64_t packed_row_stride, uintptr_t device_status, int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_pack_int4_cuda(ptr<const uint8_t>(codes), ptr<uint8_t>(packed), rows, n, codes_row_stride,
                               packed_row_stride, ptr<int32_t>(device_status), device, ptr<void>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.pack_int4(rows=" << rows << ", n=" << n << ", device=" << device << ")";
    raise_cuda_status(status, ctx.str());
  }
}

void unpack_int4(uintptr_t packed, uintptr_t codes, int64_t rows, int64_t n, int64_t packed_row_stride,
                 int64_t codes_row_stride, int device, uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_unpack_int4_cuda(ptr<const uint8_t>(packed), ptr<uint8_t>(codes), rows, n, packed_row_stride,
                                 codes_row_stride, device, ptr<void>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.unpack_int4(rows=" << rows << ", n=" << n << ", device=" << device << ")";
    raise_cuda_status(status, ctx.str());
  }
}

void dequantize(uintptr_t codes, int codes_format, int64_t out_features, int64_t in_features,
                int64_t codes_row_stride, uintptr_t scales, int scale_dtype, uintptr_t zeros, int bits,
                int64_t group_size, uintptr_t out, int out_dtype, int64_t out_row_stride, int device,
                uintptr_t stream) {
  int status;
  {
    py::gil_scoped_release release;
    status = tc_dequantize_cuda(ptr<const uint8_t>(codes), codes_format, out_features, in_features, codes_row_stride,
                                ptr<const void>(scales), scale_dtype, ptr<const uint8_t>(zeros), bits, group_size,
                                ptr<void>(out), out_dtype, out_row_stride, device, ptr<void>(stream));
  }
  if (status != TC_OK) {
    std::ostringstream ctx;
    ctx << "tcompress._cuda.dequantize(codes_format=" << codes_format << ", out_features=" << out_features
        << ", in_features=" << in_features << ", bits=" << bits << ", group_size=" << group_size
        << ", device=" << device << ")";
    raise_cuda_status(status, ctx.str());
  }
}

}  // namespace

void bind_cuda_quant(pybind11::module_& m) {
  m.attr("CODES_UINT8") = int(TC_CODES_UINT8);
  m.attr("CODES_INT4_PACKED") = int(TC_CODES_INT4_PACKED);
  m.def("quantize", &quantize, py::arg("w"), py::arg("w_dtype"), py::arg("out_features"), py::arg("in_features"),
        py::arg("w_row_stride"), py::arg("bits"), py::arg("group_size"), py::arg("symmetric"), py::arg("codes"),
        py::arg("scales"), py::arg("scale_dtype"), py::arg("zeros"), py::arg("device_status"), py::arg("device"),
        py::arg("stream"),
        "tcompress._C.quantize on `device`, enqueued on `stream`; data errors are stored in the int32 at "
        "device_status (0: not reported).");
  m.def("pack_int4", &pack_int4, py::arg("codes"), py::arg("packed"), py::arg("rows"), py::arg("n"),
        py::arg("codes_row_stride"), py::arg("packed_row_stride"), py::arg("device_status"), py::arg("device"),
        py::arg("stream"), "tcompress._C.pack_int4 on `device`; a code above 15 is reported through device_status.");
  m.def("unpack_int4", &unpack_int4, py::arg("packed"), py::arg("codes"), py::arg("rows"), py::arg("n"),
        py::arg("packed_row_stride"), py::arg("codes_row_stride"), py::arg("device"), py::arg("stream"),
        "tcompress._C.unpack_int4 on `device`.");
  m.def("dequantize", &dequantize, py::arg("codes"), py::arg("codes_format"), py::arg("out_features"),
        py::arg("in_features"), py::arg("codes_row_stride"), py::arg("scales"), py::arg("scale_dtype"),
        py::arg("zeros"), py::arg("bits"), py::arg("group_size"), py::arg("out"), py::arg("out_dtype"),
        py::arg("out_row_stride"), py::arg("device"), py::arg("stream"), "tcompress._C.dequantize on `device`.");
}

}  // namespace tcompress_bindings
