"""restoring: whatever a recipe does to the live model inside, the model computes the same afterwards."""

from __future__ import annotations

import pytest
import torch
from tcompress import models
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_
from tcompress.recipes.live_edit import restoring


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_rotation_and_quantization_are_undone(family, request):
    model = request.getfixturevalue(family)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    reference = _logits(model, ids)
    tied = model.config.tie_word_embeddings
    params = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    with restoring(model):
        compress_(model, RotateConfig(seed=0, online_hadamard=family == "tiny_mistral"))
        compress_(model, QuantizeConfig(bits=4, group_size=None, quantize_head=True))
        assert not torch.allclose(_logits(model, ids), reference)
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(modules[n] is m for n, m in model.named_modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items())
    assert model.config.tie_word_embeddings == tied
    assert not hasattr(model, "tcompress_config")
    torch.testing.assert_close(_logits(model, ids), reference, rtol=0, atol=0)


def test_module_swaps_are_undone_without_a_weight_copy(tiny_mistral):
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    reference = _logits(tiny_mistral, ids)
    with pytest.raises(RuntimeError, match="inside"), restoring(tiny_mistral, weights=False):
        compress_(tiny_mistral, QuantizeConfig(bits=8, group_size=None))
        raise RuntimeError("a failure inside the body")
    arch = models.architecture(tiny_mistral)
    assert all(isinstance(m, torch.nn.Linear) for _, m in arch.iter_projections(tiny_mistral))
    torch.testing.assert_close(_logits(tiny_mistral, ids), reference, rtol=0, atol=0)
