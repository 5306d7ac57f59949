"""fake_quantize and matmul_input: the nn-level helpers analyses and recipes use instead of calling kernels."""

from __future__ import annotations

import pytest
import torch
from tcompress import ops
from tcompress.nn import HadamardLinear, QuantLinear, QuantSpec, fake_quantize, matmul_input


@pytest.mark.parametrize("bits", [2, 4, 5, 8])
@pytest.mark.parametrize("group_size", [None, 16])
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_is_the_storage_format_dequantized(bits, group_size, symmetric):
    w = torch.randn(12, 64, generator=torch.Generator().manual_seed(bits))
    codes, scales, zeros = ops.quantize_reference(w, bits, group_size, symmetric, torch.float16)
    expected = ops.dequantize_reference(codes, scales, zeros, bits, group_size)
    got = fake_quantize(w, bits, group_size, symmetric=symmetric)
    assert torch.equal(got, expected)
    levels = got.reshape(12, -1, group_size or 64)
    # At most 2^bits distinct values per group: the rounding really happened.
    assert max(len(torch.unique(g)) for row in levels for g in row) <= 1 << bits
    assert not torch.equal(got, w)


def test_fake_quantize_matches_what_a_quant_linear_holds():
    lin = torch.nn.Linear(64, 8)
    spec = QuantSpec(bits=4, group_size=32, symmetric=True, scale_dtype="float16")
    held = QuantLinear.from_linear(lin, spec).dequantized_weight()
    assert torch.equal(fake_quantize(lin.weight, 4, 32, scale_dtype=torch.float16), held)


@pytest.mark.parametrize("bad", [1, 9, 4.0, "4"])
def test_fake_quantize_refuses_bad_bits(bad):
    with pytest.raises(ValueError, match="bits must be an int in 2..8"):
        fake_quantize(torch.randn(4, 8), bad, None)


def test_fake_quantize_refuses_a_vector():
    with pytest.raises(ValueError, match=r"\(out, in\); got shape \(8,\)"):
        fake_quantize(torch.randn(8), 4, None)


def test_matmul_input_applies_the_online_hadamard_only_where_the_layer_does():
    x = torch.randn(3, 64)
    lin = torch.nn.Linear(64, 8)
    assert matmul_input(lin, x) is x
    transformed = ops.hadamard_transform(x)
    assert torch.equal(matmul_input(HadamardLinear.from_linear(lin.weight, lin.bias), x), transformed)
    online = QuantLinear.from_linear(HadamardLinear.from_linear(lin.weight, lin.bias), QuantSpec(8, None))
    assert online.online_hadamard
    assert torch.equal(matmul_input(online, x), transformed)
    assert matmul_input(QuantLinear.from_linear(lin, QuantSpec(bits=8, group_size=None)), x) is x
