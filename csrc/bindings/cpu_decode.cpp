// tcompress._C binding of the decode step (see tcompress/decode.h): a DecodePlan holds the model description made
// once from Python (pointers into tensors the Python side keeps alive) and its scratch; step() is the per-token call.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>
#include <sstream>
#include <vector>

#include "register.h"
#include "status_error.h"
#include "tcompress/decode.h"

namespace py = pybind11;

namespace tcompress_bindings {

namespace {

// (qweight, K, N, bits, scales, scale_dtype, zeros, group_size, bias, bias_dtype, act_bits, act_per_group,
// online_hadamard, hadamard, hadamard_k, hadamard_scale); pointers as integers.
using LinearArgs = std::tuple<uintptr_t, int64_t, int64_t, int, uintptr_t, int, uintptr_t, int64_t, uintptr_t, int, int,
                              bool, bool, uintptr_t, int64_t, double>;

tc_decode_linear to_linear(const std::optional<LinearArgs>& args) {
  tc_decode_linear l{};
  if (!args) return l;
  const auto& [qweight, K, N, bits, scales, scale_dtype, zeros, group_size, bias, bias_dtype, act_bits, per_group,
               online, hadamard, hadamard_k, hadamard_scale] = *args;
  l.qweight = reinterpret_cast<const uint8_t*>(qweight);
  l.K = K;
  l.N = N;
  l.bits = bits;
  l.scales = reinterpret_cast<const void*>(scales);
  l.scale_dtype = scale_dtype;
  l.zeros = reinterpret_cast<const uint8_t*>(zeros);
  l.group_size = group_size;
  l.bias = reinterpret_cast<const void*>(bias);
  l.bias_dtype = bias_dtype;
  l.act_bits = act_bits;
  l.act_per_group = per_group ? 1 : 0;
  l.online_hadamard = online ? 1 : 0;
  l.hadamard = reinterpret_cast<const float*>(hadamard);
  l.hadamard_k = hadamard_k;
  l.hadamard_scale = float(hadamard_scale);
  return l;
}

// (attn_norm, mlp_norm, attn_norm_bias, mlp_norm_bias, q, k, v, o, gate, up, down, k_cache, v_cache); k, v None
// when q/k/v are fused, gate for a GELU MLP; biases 0 for none.
using LayerArgs = std::tuple<uintptr_t, uintptr_t, uintptr_t, uintptr_t, std::optional<LinearArgs>, std::optional<LinearArgs>,
                             std::optional<LinearArgs>, std::optional<LinearArgs>, std::optional<LinearArgs>,
                             std::optional<LinearArgs>, std::optional<LinearArgs>, uintptr_t, uintptr_t>;

class DecodePlan {
 public:
  DecodePlan(int64_t d, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t ffn, int64_t max_len,
             int64_t vocab, int64_t sliding_window, double eps, double attn_scale, bool qkv_fused, int norm_type,
             int mlp_type, uintptr_t embed, uintptr_t pos_embed, uintptr_t rope_cos, uintptr_t rope_sin,
             uintptr_t final_norm, uintptr_t final_norm_bias, const std::vector<LayerArgs>& layers,
             const std::optional<LinearArgs>& head) {
    for (const auto& a : layers) {
      tc_decode_layer l{};
      l.attn_norm = reinterpret_cast<const float*>(std::get<0>(a));
      l.mlp_norm = reinterpret_cast<const float*>(std::get<1>(a));
      l.attn_norm_bias = reinterpret_cast<const float*>(std::get<2>(a));
      l.mlp_norm_bias = reinterpret_cast<const float*>(std::get<3>(a));
      l.q = to_linear(std::get<4>(a));
      l.k = to_linear(std::get<5>(a));
      l.v = to_linear(std::get<6>(a));
      l.o = to_linear(std::get<7>(a));
      l.gate = to_linear(std::get<8>(a));
      l.up = to_linear(std::get<9>(a));
      l.down = to_linear(std::get<10>(a));
      l.k_cache = reinterpret_cast<float*>(std::get<11>(a));
      l.v_cache = reinterpret_cast<float*>(std::get<12>(a));
      layers_.push_back(l);
    }
    head_ = to_linear(head);
    m_ = tc_decode_model{};
    m_.n_layers = int64_t(layers_.size());
    m_.d = d;
    m_.n_heads = n_heads;
    m_.n_kv_heads = n_kv_heads;
    m_.head_dim = head_dim;
    m_.ffn = ffn;
    m_.max_len = max_len;
    m_.vocab = vocab;
    m_.sliding_window = sliding_window;
    m_.eps = float(eps);
    m_.attn_scale = float(attn_scale);
    m_.qkv_fused = qkv_fused;
    m_.norm_type = norm_type;
    m_.mlp_type = mlp_type;
    m_.embed = reinterpret_cast<const float*>(embed);
    m_.pos_embed = reinterpret_cast<const float*>(pos_embed);
    m_.final_norm_bias = reinterpret_cast<const float*>(final_norm_bias);
    m_.rope_cos = reinterpret_cast<const float*>(rope_cos);
    m_.rope_sin = reinterpret_cast<const float*>(rope_sin);
    m_.final_norm = reinterpret_cast<const float*>(final_norm);
    m_.layers = layers_.data();
    m_.head = head ? &head_ : nullptr;
    scratch_.assign(size_t(std::max<int64_t>(tc_decode_scratch_floats(&m_), 1)), 0.0f);
    m_.scratch = scratch_.data();
    int64_t bad_layer = -1;
    const int status = tc_decode_check(&m_, &bad_layer);
    if (status != TC_OK) {
      std::ostringstream ctx;
      ctx << "tcompress._C.DecodePlan(layers=" << m_.n_layers << ", d=" << d << ", heads=" << n_heads << "/"
          << n_kv_heads << ", head_dim=" << head_dim << ", ffn=" << ffn << ", max_len=" << max_len
          << ", vocab=" << vocab << ")";
      if (bad_layer >= 0) ctx << " at layer " << bad_layer;
      raise_status(status, ctx.str());
    }
  }

  // The plan points into its own vectors: a copy would point into the original's.
  DecodePlan(const DecodePlan&) = delete;
  DecodePlan& operator=(const DecodePlan&) = delete;

  void step(int64_t token, int64_t pos, uintptr_t out, int num_threads) {
    int status;
    {
      py::gil_scoped_release release;
      status = tc_decode_step_cpu(&m_, token, pos, reinterpret_cast<float*>(out), num_threads);
    }
    if (status != TC_OK) {
      std::ostringstream ctx;
      ctx << "tcompress._C.DecodePlan.step(token=" << token << ", pos=" << pos << "; vocab " << m_.vocab
          << ", max_len " << m_.max_len << ")";
      raise_status(status, ctx.str());
    }
  }

  int64_t out_features() const { return m_.head != nullptr ? m_.vocab : m_.d; }

 private:
  tc_decode_model m_;
  std::vector<tc_decode_layer> layers_;
  tc_decode_linear head_;
  std::vector<float> scratch_;
};

}  // namespace

void bind_cpu_decode(pybind11::module_& m) {
  m.attr("DECODE_RMSNORM") = int(TC_DECODE_RMSNORM);
  m.attr("DECODE_LAYERNORM") = int(TC_DECODE_LAYERNORM);
  m.attr("DECODE_MLP_SILU_GATED") = int(TC_DECODE_MLP_SILU_GATED);
  m.attr("DECODE_MLP_GELU_TANH") = int(TC_DECODE_MLP_GELU_TANH);
  m.attr("DECODE_MLP_GELU_ERF") = int(TC_DECODE_MLP_GELU_ERF);
  py::class_<DecodePlan>(m, "DecodePlan",
                         "A pre-norm decoder (Llama family, GPT-2) described by pointers (see tcompress/decode.h); step() runs one "
                         "batch-1 decode step. The caller keeps every tensor behind the pointers alive; one thread at a "
                         "time per plan (its scratch and the caches are shared by its steps).")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, bool,
                    int, int, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t,
                    const std::vector<LayerArgs>&, const std::optional<LinearArgs>&>(),
           py::arg("d"), py::arg("n_heads"), py::arg("n_kv_heads"), py::arg("head_dim"), py::arg("ffn"),
           py::arg("max_len"), py::arg("vocab"), py::arg("sliding_window"), py::arg("eps"), py::arg("attn_scale"),
           py::arg("qkv_fused"), py::arg("norm_type"), py::arg("mlp_type"),
           py::arg("embed"), py::arg("pos_embed"), py::arg("rope_cos"), py::arg("rope_sin"), py::arg("final_norm"),
           py::arg("final_norm_bias"), py::arg("layers"), py::arg("head"))
      .def("step", &DecodePlan::step, py::arg("token"), py::arg("pos"), py::arg("out"), py::arg("num_threads"),
           "Runs position `pos` for `token`; writes logits (vocab) with a head, else the final hidden state (d). "
           "Releases the GIL.")
      .def_property_readonly("out_features", &DecodePlan::out_features);
}

}  // namespace tcompress_bindings
