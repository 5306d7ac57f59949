"""QuantLinear: packed weights from nn.Linear / Conv1D, forward on the packed kernels, errors, state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tcompress.nn import QuantLinear, QuantSpec
from tcompress.ops import dequantize_reference, quantize_reference
from transformers.pytorch_utils import Conv1D

SPECS = [
    QuantSpec(8, None, True),
    QuantSpec(8, 32, False),
    QuantSpec(4, None, True),
    QuantSpec(4, 32, True),
    QuantSpec(4, 64, False, "bfloat16"),
    QuantSpec(4, 32, True, "float16"),
]


def _linear(in_features=128, out_features=96, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05)
        if bias:
            lin.bias.normal_(0, 0.1)
    return lin


def _fake_quant(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    q = quantize_reference(w, spec.bits, spec.group_size, spec.symmetric, spec.torch_scale_dtype)
    return dequantize_reference(*q, spec.bits, spec.group_size)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_fake_quantized_fp32(spec, bias):
    lin = _linear(bias=bias)
    q = QuantLinear.from_linear(lin, spec)
    w = _fake_quant(lin.weight, spec)
    assert torch.equal(q.dequantized_weight(), w)
    for rows in (1, 5, 64):
        x = torch.randn(2, rows, 128)
        torch.testing.assert_close(q(x), F.linear(x, w, lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_output_keeps_the_activation_dtype(dtype):
    lin = _linear()
    q = QuantLinear.from_linear(lin, QuantSpec(4, 32))
    x = torch.randn(3, 128)
    y = q(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), q(x), rtol=2e-2, atol=2e-2)


def test_conv1d_is_read_transposed():
    torch.manual_seed(1)
    conv = Conv1D(96, 128)  # nf=96 outputs, nx=128 inputs, weight stored (128, 96)
    with torch.no_grad():
        conv.weight.normal_(0, 0.05)
        conv.bias.normal_(0, 0.1)
    spec = QuantSpec(8, 64)
    q = QuantLinear.from_linear(conv, spec)
    assert (q.in_features, q.out_features) == (128, 96)
    x = torch.randn(4, 128)
    torch.testing.assert_close(q(x), F.linear(x, _fake_quant(conv.weight.t(), spec), conv.bias), rtol=1e-5, atol=1e-5)
    # int8 per-group is close to the original layer
    torch.testing.assert_close(q(x), conv(x), rtol=0, atol=0.02)


def test_int8_is_closer_than_int4():
    lin = _linear()
    x = torch.randn(16, 128)
    ref = lin(x)
    err8 = (QuantLinear.from_linear(lin, QuantSpec(8, None))(x) - ref).abs().mean()
    err4 = (QuantLinear.from_linear(lin, QuantSpec(4, None))(x) - ref).abs().mean()
    assert 0 < err8 < err4 / 4


def test_state_dict_round_trip_is_exact():
    lin = _linear()
    spec = QuantSpec(4, 32, False, "bfloat16")
    q = QuantLinear.from_linear(lin, spec)
    fresh = QuantLinear(128, 96, spec, bias=True)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(7, 128)
    assert torch.equal(fresh(x), q(x))
    assert set(q.state_dict()) == {"qweight", "scales", "zeros", "bias"}
    assert q.qweight.shape == (96, 64) and q.qweight.dtype == torch.uint8
    assert q.scales.shape == (96, 4) and q.scales.dtype == torch.bfloat16


def test_group_size_that_does_not_divide_is_an_error():
    with pytest.raises(ValueError, match=r"'blocks.0.fc'.*group_size 48 does not divide its in_features 128"):
        QuantLinear.from_linear(_linear(), QuantSpec(4, 48), name="blocks.0.fc")


def test_non_finite_weight_is_named():
    lin = _linear()
    with torch.no_grad():
        lin.weight[3, 5] = float("nan")
        lin.weight[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"'mlp.up'.*NaN or Inf \(2 non-finite"):
        QuantLinear.from_linear(lin, QuantSpec(8, None), name="mlp.up")


def test_not_a_linear_layer():
    with pytest.raises(TypeError, match="expected an nn.Linear or a transformers Conv1D; got Embedding"):
        QuantLinear.from_linear(torch.nn.Embedding(4, 4), QuantSpec())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 3}, "bits must be 4 or 8; got 3"),
        ({"group_size": 0}, "group_size must be a positive int or None"),
        ({"scale_dtype": "int8"}, "scale_dtype must be one of float32, float16, bfloat16; got 'int8'"),
    ],
)
def test_bad_spec(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_wrong_activation_inner_size_is_an_error():
    q = QuantLinear.from_linear(_linear(), QuantSpec(4, 32))
    with pytest.raises(ValueError, match="128"):
        q(torch.randn(2, 64))


def test_from_linear_with_something_that_is_no_config_is_a_clear_error():
    with pytest.raises(TypeError, match=r"QuantSpec\.of: expected a QuantSpec.*got object"):
        QuantLinear.from_linear(torch.nn.Linear(8, 4), object())
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        QuantSpec(bits=4, group_size=None, symmetric="yes")


def test_loading_non_finite_scales_is_refused():
    # Kernel and reference disagree on a non-finite scale (-inf vs NaN): such a layer is refused when loaded.
    layer = QuantLinear.from_linear(torch.nn.Linear(16, 4), QuantSpec(bits=8, group_size=8))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["scales"][2, 1] = float("inf")
    fresh = QuantLinear(16, 4, QuantSpec(bits=8, group_size=8))
    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(first: row 2, group 1 = inf\)"):
        fresh.load_state_dict(state)
    fresh.load_state_dict(layer.state_dict())  # finite scales load
