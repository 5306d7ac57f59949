"""tcompress.nn.LinearBlock: both forms against the plain formula, int8 factors, parameter counts, state_dict
round trip, .to(dtype) rules and bad constructor input."""

from __future__ import annotations

import pytest
import torch
from tcompress.nn import LinearBlock
from tensors import randn, rel_error


def factors(d=48, r=6):
    return randn(d, r, seed=1) / d**0.5, randn(r, d, seed=2) / r**0.5, randn(d, seed=3), randn(d, seed=4)


def test_low_rank_forward_matches_formula():
    U, V, b, mu = factors()
    block = LinearBlock.from_factors(U, V, b, mu)
    h = randn(2, 5, 48, seed=5)
    want = h + (h - mu) @ U @ V + b
    assert block(h).shape == h.shape
    assert rel_error(block(h), want) <= 1e-5
    assert block.d == 48 and block.rank == 6
    assert block.num_parameters() == 48 * 6 * 2 + 2 * 48
    assert not list(block.parameters())  # a fitted map: buffers only


def test_dense_forward_matches_formula():
    A, b = randn(32, 32, seed=6), randn(32, seed=7)
    block = LinearBlock.from_dense(A, b)
    h = randn(3, 32, seed=8)
    assert rel_error(block(h), h @ A + b) <= 1e-5
    assert block.rank is None and block.d == 32
    assert block.num_parameters() == 32 * 32 + 32


def test_int8_factors_close_to_float_and_counted():
    U, V, b, mu = factors(64, 8)
    exact = LinearBlock.from_factors(U, V, b, mu)
    q = LinearBlock.from_factors(U, V, b, mu, quantize="int8")
    assert q.U.dtype == torch.int8 and q.V.dtype == torch.int8 and q.u_scale.dtype == torch.float32
    h = randn(4, 64, seed=9)
    # int8 per-column rounding: relative error of the update of the order of 1/127 per factor.
    update_err = ((q(h) - exact(h)).abs().max() / (exact(h) - h).abs().max()).item()
    assert update_err < 0.05
    assert q.num_parameters() == 64 * 8 * 2 + 2 * 64 + 8 + 64


def test_state_dict_round_trip_and_keys():
    U, V, b, mu = factors()
    for block, empty in (
        (LinearBlock.from_factors(U, V, b, mu), LinearBlock(48, 6)),
        (LinearBlock.from_factors(U, V, b, mu, quantize="int8"), LinearBlock(48, 6, quantize="int8")),
        (LinearBlock.from_dense(randn(48, 48), b), LinearBlock(48, None)),
    ):
        empty.load_state_dict(block.state_dict())
        h = randn(3, 48, seed=11)
        torch.testing.assert_close(empty(h), block(h))
    assert set(LinearBlock(48, 6, quantize="int8").state_dict()) == {"U", "V", "b", "mu", "u_scale", "v_scale"}
    assert set(LinearBlock(48, None).state_dict()) == {"weight", "b"}


def test_to_dtype_casts_floats_keeps_int8_and_scales():
    U, V, b, mu = factors()
    block = LinearBlock.from_factors(U, V, b, mu).to(torch.bfloat16)
    assert block.U.dtype == torch.bfloat16 and block.mu.dtype == torch.bfloat16
    h = randn(3, 48, seed=12, dtype=torch.bfloat16)
    assert block(h).dtype == torch.bfloat16
    q = LinearBlock.from_factors(U, V, b, mu, quantize="int8").to(torch.bfloat16)
    assert q.U.dtype == torch.int8 and q.u_scale.dtype == torch.float32 and q.b.dtype == torch.bfloat16
    assert q(h).dtype == torch.bfloat16


def test_bad_input_is_a_clear_error():
    U, V, b, mu = factors()
    with pytest.raises(ValueError, match=r"V must have shape \(r, d\) = \(6, 48\)"):
        LinearBlock.from_factors(U, V.t(), b, mu)
    with pytest.raises(ValueError, match=r"mu must have shape \(d,\) = \(48,\)"):
        LinearBlock.from_factors(U, V, b, mu[:10])
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        LinearBlock.from_factors(U, V, b, mu, quantize="int4")
    with pytest.raises(TypeError, match="U must be a floating tensor"):
        LinearBlock.from_factors(U.to(torch.int32), V, b, mu)
    with pytest.raises(ValueError, match="A must be square"):
        LinearBlock.from_dense(randn(4, 5), randn(4))
    with pytest.raises(ValueError, match=r"b must have shape \(d,\) = \(4,\)"):
        LinearBlock.from_dense(randn(4, 4), randn(5))
    with pytest.raises(ValueError, match="last dimension d = 48"):
        LinearBlock.from_factors(U, V, b, mu)(randn(2, 47))
    with pytest.raises(ValueError, match="rank must be a positive int"):
        LinearBlock(48, 0)
