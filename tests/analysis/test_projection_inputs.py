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
