"""LowRankLinear: x·(A·B)ᵀ + bias with plain or quantized factors, and clear errors for mismatched factors."""

from __future__ import annotations

import pytest
import torch
from tcompress.nn import LowRankLinear, QuantLinear, QuantSpec


def _factors(out_features=48, in_features=32, rank=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(out_features, rank, generator=gen)
    b = torch.randn(rank, in_features, generator=gen)
    return a, b, torch.randn(out_features, generator=gen)


def test_plain_factors_compute_x_ab_plus_bias():
    a, b, bias = _factors()
    layer = LowRankLinear.from_factors(a, b, bias)
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(layer(x), x @ (a @ b).T + bias, rtol=1e-4, atol=1e-4)
    assert (layer.in_features, layer.out_features, layer.rank) == (32, 48, 8)
    torch.testing.assert_close(layer.effective_weight(), a @ b)
    assert isinstance(layer.in_proj, torch.nn.Linear) and layer.in_proj.bias is None


def test_quantized_factors_match_their_dequantized_product():
    a, b, _ = _factors()
    layer = LowRankLinear.from_factors(a, b, None, QuantSpec(bits=4, group_size=8))
    assert isinstance(layer.in_proj, QuantLinear) and isinstance(layer.out_proj, QuantLinear)
    qa, qb = layer.factors()
    assert not torch.equal(qa, a)  # it really was rounded
    x = torch.randn(4, 32)
    torch.testing.assert_close(layer(x), x @ (qa @ qb).T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "a_shape, b_shape, bias_shape, match",
    [
        ((48, 8), (7, 32), None, "share the rank"),
        ((48, 8, 1), (8, 32), None, "2-D"),
        ((48, 8), (8, 32), (47,), "bias must have shape"),
    ],
)
def test_mismatched_factors_raise(a_shape, b_shape, bias_shape, match):
    bias = None if bias_shape is None else torch.zeros(bias_shape)
    with pytest.raises(ValueError, match=match):
        LowRankLinear.from_factors(torch.randn(a_shape), torch.randn(b_shape), bias)


def test_quantized_factor_group_must_divide_rank():
    a, b, _ = _factors(rank=12)
    with pytest.raises(ValueError, match="group_size 8 does not divide"):
        LowRankLinear.from_factors(a, b, None, QuantSpec(bits=4, group_size=8))


def test_submodules_must_be_bias_free_linears():
    with pytest.raises(ValueError, match="no bias"):
        LowRankLinear(torch.nn.Linear(4, 2), torch.nn.Linear(2, 3, bias=False))
    with pytest.raises(TypeError, match="nn.Linear or a QuantLinear"):
        LowRankLinear(torch.nn.Conv1d(4, 2, 1), torch.nn.Linear(2, 3, bias=False))
    with pytest.raises(ValueError, match="both are the rank"):
        LowRankLinear(torch.nn.Linear(4, 2, bias=False), torch.nn.Linear(3, 3, bias=False))
