"""The reconstruction-wall experiment: bit accounting, the cross-term identity, and the experiment end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tcompress.analysis.projection_inputs import InputMoment
from tcompress.nn import LowRankLinear, QuantSpec
from tcompress.recipes.factorize import truncated_svd
from tcompress.recipes.reconstruction_wall import (
    VARIANTS,
    factored_rank,
    fake_quantize,
    quantized_bits,
    reconstruct,
    reconstruction_wall,
    residual_rank,
)


def _moment(in_features, seed=0):
    x = torch.randn(300, in_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return InputMoment(x.T @ x, 300)


@pytest.mark.parametrize(
    "shape, group, rank", [((576, 576), 64, 256), ((576, 576), 32, 288), ((1536, 576), 64, 384), ((64, 172), None, 44)]
)
def test_factored_rank_fits_the_direct_budget(shape, group, rank):
    out_features, in_features = shape
    r = factored_rank(out_features, in_features, group)
    assert r == rank
    budget = quantized_bits(out_features, in_features, 4, group)
    used = quantized_bits(out_features, r, 4, group) + quantized_bits(r, in_features, 4, group)
    assert used <= budget
    assert r <= out_features * in_features / (out_features + in_features)


def test_bits_per_weight_of_direct_int4_is_four_plus_scale_bits():
    assert quantized_bits(576, 576, 4, 64) / (576 * 576) == 4 + 16 / 64
    assert quantized_bits(64, 172, 4, None) / (64 * 172) == pytest.approx(4 + 16 / 172)
    assert residual_rank(576, 576) == 18 and residual_rank(32, 64) == 1 and residual_rank(8, 8) == 0


def test_cross_term_identity():
    """Q(A)Q(B) − AB = ε_A·B + A·ε_B + ε_A·ε_B, and the reported norms are those of the terms."""
    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    moment = _moment(64)
    w_hat, layer = reconstruct(w, "factored-int4", 32, moment)
    f = truncated_svd(w, rank=layer.rank)
    qa, qb = fake_quantize(f.a, 4, 32).double(), fake_quantize(f.b, 4, 32).double()
    ea, eb = qa - f.a, qb - f.b
    torch.testing.assert_close(qa @ qb - f.a @ f.b, ea @ f.b + f.a @ eb + ea @ eb, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w_hat.double(), qa @ qb, rtol=1e-6, atol=1e-6)
    assert layer.cross_terms["eps_a_b"][0] == pytest.approx(float(((ea @ f.b) ** 2).sum()))
    assert layer.cross_terms["eps_a_eps_b"][1] == pytest.approx(moment.output_sq_norm(ea @ eb))
    assert layer.cross_terms["truncation"][0] == pytest.approx(float(((f.a @ f.b - w.double()) ** 2).sum()))
    assert layer.bits <= quantized_bits(96, 64, 4, 32)


def test_factored_variant_equals_a_quantlinear_pair():
    """The fake-quant Q(A)·Q(B) is what a LowRankLinear with two int4 QuantLinear factors computes."""
    w = torch.randn(96, 64, generator=torch.Generator().manual_seed(2))
    w_hat, layer = reconstruct(w, "factored-int4", 32, _moment(64))
    f = truncated_svd(w, rank=layer.rank)
    pair = LowRankLinear.from_factors(f.a.float(), f.b.float(), None, QuantSpec(4, 32, True, "float16"))
    torch.testing.assert_close(pair.effective_weight(), w_hat, rtol=1e-5, atol=1e-6)


def test_residual_variant_beats_direct_int4_on_weights_with_a_strong_low_rank_part():
    gen = torch.Generator().manual_seed(3)
    w = 0.1 * torch.randn(128, 128, generator=gen) + 3 * torch.randn(128, 1, generator=gen) @ torch.randn(
        1, 128, generator=gen
    )
    moment = _moment(128)
    _, direct = reconstruct(w, "direct-int4", 32, moment)
    _, residual = reconstruct(w, "residual-int4+lr", 32, moment)
    assert residual.rank == residual_rank(128, 128) == 4
    assert residual.weight_rel_error < direct.weight_rel_error
    assert residual.bits_per_weight <= 5 + 16 / 32


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="unknown variant"):
        reconstruct(torch.randn(8, 8), "direct-int3", None, _moment(8))


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_experiment_end_to_end(family, request):
    model = request.getfixturevalue(family)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def measure(m):
        calls.append(m)
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(m(ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))

    result = reconstruction_wall(model, ids, group_size=4, measure=measure)
    assert [v.variant for v in result.variants] == list(VARIANTS)
    assert len(calls) == 1 + len(VARIANTS)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model itself is untouched
    by_name = {v.variant: v for v in result.variants}
    assert by_name["factored-int4"].bits_per_weight <= by_name["direct-int4"].bits_per_weight
    assert by_name["residual-int4+lr"].bits_per_weight <= by_name["direct-int5"].bits_per_weight
    assert by_name["direct-int5"].weight_rel_error < by_name["direct-int4"].weight_rel_error
    terms = by_name["factored-int4"].cross_term_totals()
    assert set(terms) == {"truncation", "eps_a_b", "a_eps_b", "eps_a_eps_b", "ab"}
    for v in result.variants:
        assert math.isfinite(v.perplexity) and 0 < v.output_rel_error and 0 < v.weight_rel_error
        assert len(v.layers) == len(result.variants[0].layers)
    json.dumps(result.to_dict())  # JSON-serializable


def test_group_size_that_does_not_divide_raises(tiny_mistral):
    ids = torch.randint(0, 512, (2, 16))
    with pytest.raises(ValueError, match="does not divide in_features 172"):
        reconstruction_wall(tiny_mistral, ids, group_size=32, variants=("direct-int4",))
