"""ScaleFreeRMSNorm, HadamardLinear, and QuantLinear's online Hadamard and activation quantization."""

from __future__ import annotations

import pytest
import torch
from tcompress import ops
from tcompress.hadamard import hadamard_matrix
from tcompress.nn import HadamardLinear, QuantLinear, QuantSpec, ScaleFreeRMSNorm
from tensors import randn


def test_scale_free_rmsnorm_matches_the_formula_and_is_rotation_invariant():
    x = randn(3, 5, 64)
    norm = ScaleFreeRMSNorm(64, 1e-5)
    torch.testing.assert_close(norm(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    q = hadamard_matrix(64, normalized=True)
    torch.testing.assert_close(norm(x @ q), norm(x) @ q, rtol=1e-5, atol=1e-5)
    assert not list(norm.parameters())


def test_scale_free_rmsnorm_errors():
    with pytest.raises(ValueError, match="dim must be a positive int"):
        ScaleFreeRMSNorm(0, 1e-5)
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        ScaleFreeRMSNorm(8, -1.0)
    with pytest.raises(ValueError, match=r"expected inputs \(\.\.\., 8\); got shape \(2, 7\)"):
        ScaleFreeRMSNorm(8, 1e-5)(randn(2, 7))


@pytest.mark.parametrize("n", [64, 172, 1536])
def test_hadamard_linear_computes_the_original_map(n):
    w, b, x = randn(24, n, seed=1), randn(24, seed=2), randn(4, n, seed=3)
    layer = HadamardLinear.from_linear(w, b)
    torch.testing.assert_close(layer(x), x @ w.T + b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(layer.weight, w)


def test_hadamard_linear_fuses_wide_weights_slice_by_slice():
    # in = 2^20: the offline W·H is computed two rows at a time (a float64 budget of 4M elements); same result.
    weight = torch.randn(5, 1 << 20, generator=torch.Generator().manual_seed(0))
    fused = HadamardLinear.from_linear(weight, None).weight
    expected = ops.hadamard_reference(weight.to(torch.float64)).to(torch.float32)
    assert torch.equal(fused, expected)


def test_hadamard_linear_in_place_shares_the_weight_and_computes_the_same_map():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    lin = torch.nn.Linear(64, 24)
    x = torch.randn(3, 64, generator=gen)
    with torch.no_grad():
        expected = lin(x)
        copied = HadamardLinear.from_linear(lin.weight, lin.bias)
        assert copied.weight.data_ptr() != lin.weight.data_ptr()
        shared = HadamardLinear.from_linear(lin.weight, lin.bias, in_place=True)
        assert shared.weight.data_ptr() == lin.weight.data_ptr() and shared.bias.data_ptr() == lin.bias.data_ptr()
        torch.testing.assert_close(shared(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copied.weight, shared.weight, rtol=0, atol=0)
        # A transposed view (Conv1D's layout) is copied into a contiguous weight, in_place or not.
        view = HadamardLinear.from_linear(torch.randn(64, 24).T, None, in_place=True)
        assert view.weight.is_contiguous()


def test_hadamard_linear_refuses_a_width_without_construction():
    with pytest.raises(ValueError, match=r"module 'blk.down'.*K \* 2\^m"):
        HadamardLinear.from_linear(randn(8, 90), None, name="blk.down")


def _quant(n=128, out=32, **kwargs) -> tuple[QuantLinear, torch.Tensor]:
    linear = torch.nn.Linear(n, out)
    with torch.no_grad():
        linear.weight.copy_(randn(out, n, seed=4))
    return QuantLinear.from_linear(linear, QuantSpec(4, 64), **kwargs), linear.weight.detach()


@pytest.mark.parametrize("act_bits", [8, 4])
def test_activation_bits_route_through_qlinear_a8(act_bits):
    layer, _ = _quant(act_bits=act_bits)
    x = randn(5, 128, seed=5)
    expected = ops.qlinear_a8_reference(
        x, layer.qweight, layer.scales, layer.zeros, 4, 64, act_bits=act_bits, bias=layer.bias
    )
    torch.testing.assert_close(layer(x), expected)
    plain = QuantLinear.from_linear(torch.nn.Linear(128, 32), QuantSpec(4, 64))
    plain.load_state_dict(layer.state_dict())
    assert not torch.allclose(plain(x), layer(x))  # the activations really were quantized
    assert f"act_bits={act_bits}" in repr(layer)


def test_quantizing_a_hadamard_linear_keeps_the_online_transform():
    w, x = randn(32, 128, seed=6), randn(3, 128, seed=7)
    hl = HadamardLinear.from_linear(w, None)
    q = QuantLinear.from_linear(hl, QuantSpec(8, None))
    assert q.online_hadamard and "online_hadamard=True" in repr(q)
    expected = ops.hadamard_transform(x) @ q.dequantized_weight().T
    torch.testing.assert_close(q(x), expected, rtol=1e-5, atol=1e-5)
    exact = x @ w.T
    assert float((q(x) - exact).norm() / exact.norm()) < 0.02  # int8 per channel: close to the original


@pytest.mark.parametrize("bad", [2, 16, 8.0, True, "8"])
def test_bad_act_bits_are_refused(bad):
    with pytest.raises(ValueError, match="act_bits must be None"):
        QuantLinear(64, 8, QuantSpec(4, 64), act_bits=bad)


def test_online_hadamard_needs_a_hadamard_width():
    with pytest.raises(ValueError, match="QuantLinear: an online Hadamard"):
        QuantLinear(90, 8, QuantSpec(8, None), online_hadamard=True)
