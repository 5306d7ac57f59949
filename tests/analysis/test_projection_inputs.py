"""collect_input_moments: XᵀX of every projection's input, equal to the inputs captured directly."""

from __future__ import annotations

import pytest
import torch
from tcompress import models
from tcompress.analysis.projection_inputs import InputMoment, collect_input_moments


def _ids(model, n=3, length=16):
    return torch.randint(0, model.config.vocab_size, (n, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_moments_equal_the_captured_inputs(family, request):
    model = request.getfixturevalue(family)
    ids = _ids(model)
    arch = models.architecture(model)
    captured, handles = {}, []
    for name, module in arch.iter_projections(model):
        handles.append(
            module.register_forward_pre_hook(
                lambda m, args, name=name: captured.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]))
            )
        )
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    moments = collect_input_moments(model, ids, batch_size=2)  # two batches: the sums accumulate
    assert set(moments) == set(captured)
    for name, chunks in captured.items():
        x = torch.cat(chunks).double()
        assert moments[name].tokens == ids.numel()
        torch.testing.assert_close(moments[name].xtx, x.T @ x, rtol=1e-10, atol=1e-8)
        in_features = models.projection_weight(dict(arch.iter_projections(model))[name]).shape[1]
        assert moments[name].xtx.shape == (in_features, in_features)
    # no hooks left behind
    assert all(not m._forward_pre_hooks for _, m in arch.iter_projections(model))


def test_output_sq_norm_is_the_output_error():
    x = torch.randn(50, 6, dtype=torch.float64)
    d = torch.randn(4, 6, dtype=torch.float64)
    moment = InputMoment(x.T @ x, 50)
    assert moment.output_sq_norm(d) == pytest.approx(float(((x @ d.T) ** 2).sum()), rel=1e-10)


def test_bad_arguments_raise(tiny_mistral):
    with pytest.raises(ValueError, match="2-D int64"):
        collect_input_moments(tiny_mistral, torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="not block projections"):
        collect_input_moments(tiny_mistral, _ids(tiny_mistral), names=["lm_head"])
    with pytest.raises(ValueError, match="batch_size"):
        collect_input_moments(tiny_mistral, _ids(tiny_mistral), batch_size=0)


def test_fewer_tokens_than_features_keep_the_rows():
    """Below in_features tokens the rows X are kept instead of XᵀX (smaller, and output norms cost n·out·in instead of
    in²·out); both forms give the same XᵀX and the same output norms."""
    x = torch.randn(20, 50, dtype=torch.float64)
    d = torch.randn(7, 50, dtype=torch.float64)
    from_rows, from_gram = InputMoment(rows=x), InputMoment(x.T @ x, 20)
    assert from_rows.tokens == 20 and from_rows.nbytes == 20 * 50 * 8
    assert from_rows.output_sq_norm(d) == pytest.approx(from_gram.output_sq_norm(d), rel=1e-12)
    torch.testing.assert_close(from_rows.xtx, from_gram.xtx)
    with pytest.raises(ValueError, match="exactly one of xtx"):
        InputMoment()


def test_collection_keeps_rows_only_where_tokens_are_fewer_than_features(tiny_mistral):
    ids = _ids(tiny_mistral, n=2, length=40)  # 80 tokens: fewer than the MLP width (172), more than d (64)
    moments = collect_input_moments(tiny_mistral, ids)
    held = {name: m.rows is not None for name, m in moments.items()}
    assert held["model.layers.0.mlp.down_proj"] and not held["model.layers.0.self_attn.q_proj"]
