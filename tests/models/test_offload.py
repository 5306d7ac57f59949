"""Models that accelerate dispatches with offload (weights on ``meta`` until a hook loads them): the test harness
itself, reading weights with ``materialized``, ``execution_device``, and ``set_module`` keeping the hooks working."""

from __future__ import annotations

import pytest
import torch
from offload_models import FAMILIES, meta_parameters, offloaded_pair
from tcompress import evaluate, models
from torch import nn

pytest.importorskip("accelerate")


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    return offloaded_pair(request.param, tmp_path_factory.mktemp(f"offload-{request.param}"))


def _ppl(model, windows) -> float:
    return evaluate.perplexity(model, windows, progress=False).ppl


def _linear_copy(module: nn.Module) -> nn.Linear:
    """An nn.Linear computing what ``module`` (Linear or Conv1D, real weights) computes."""
    weight = models.projection_weight(module)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear


def _down_name(model, block: int) -> str:
    spec = models.architecture(model)
    return f"{spec.blocks_path}.{block}.{dict(spec.projection_paths)['down']}"


def test_harness_offloads_to_meta_and_keeps_perplexity(pair):
    spec = models.architecture(pair.model)
    offloaded = meta_parameters(pair.model)
    assert any(name.startswith(f"{spec.blocks_path}.1.") for name in offloaded)
    assert f"{spec.final_norm_path}.weight" in offloaded
    assert not any(name.startswith(f"{spec.blocks_path}.0.") for name in offloaded)
    assert (f"{spec.head_path}.weight" in offloaded) == (not spec.is_tied(pair.plain))
    assert not meta_parameters(pair.plain)
    assert models.is_offloaded(pair.model) and models.is_offloaded(spec.blocks(pair.model)[1])
    assert not models.is_offloaded(spec.blocks(pair.model)[0]) and not models.is_offloaded(pair.plain)
    assert _ppl(pair.model, pair.windows) == pytest.approx(_ppl(pair.plain, pair.windows), rel=1e-6)


def test_materialized_gives_the_real_weights_and_puts_them_back(pair):
    spec = models.architecture(pair.model)
    block, plain_block = spec.blocks(pair.model)[1], spec.blocks(pair.plain)[1]
    with models.materialized(block) as inside:
        assert inside is block
        for (name, p), (_, q) in zip(block.named_parameters(), plain_block.named_parameters()):
            assert p.device.type == "cpu", name
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        down = spec.projections(block)["down"]
        with models.materialized(down):  # nested: loads nothing new, offloads nothing on exit
            pass
        plain_down = pair.plain.get_submodule(_down_name(pair.plain, 1))
        torch.testing.assert_close(models.projection_weight(down), models.projection_weight(plain_down))
    assert all(p.device.type == "meta" for p in block.parameters())
    with pytest.raises(RuntimeError, match="boom"), models.materialized(block):
        raise RuntimeError("boom")
    assert all(p.device.type == "meta" for p in block.parameters())
    # The model still runs and gives the same numbers afterwards.
    assert _ppl(pair.model, pair.windows) == pytest.approx(_ppl(pair.plain, pair.windows), rel=1e-6)


def test_materialized_is_a_no_op_without_offload(pair):
    block = models.architecture(pair.plain).blocks(pair.plain)[1]
    before = list(block.parameters())
    with models.materialized(block):
        assert all(a is b for a, b in zip(block.parameters(), before))
    assert all(a is b for a, b in zip(block.parameters(), before))


def test_execution_device(pair):
    spec = models.architecture(pair.model)
    cpu = torch.device("cpu")
    assert models.execution_device(pair.model) == cpu
    assert models.execution_device(spec.blocks(pair.model)[1]) == cpu  # every tensor on meta, the hook says cpu
    assert models.execution_device(spec.blocks(pair.plain)[1]) == cpu
    assert models.execution_device(nn.Identity()) == cpu
    with torch.device("meta"):
        assert models.execution_device(nn.Linear(2, 2)) == torch.device("meta")


@pytest.mark.parametrize("block", [0, 1])
def test_set_module_inside_a_hooked_block_keeps_the_model_working(pair, block):
    """Block 1 is offloaded (the new module is offloaded too); block 0 is hooked but resident (placed once)."""
    name = _down_name(pair.model, block)
    old = pair.model.get_submodule(name)
    with models.materialized(old):
        new = _linear_copy(old)
    reference = _ppl(pair.plain, pair.windows)
    assert models.set_module(pair.model, name, new) is old
    try:
        assert pair.model.get_submodule(name) is new
        assert models.is_offloaded(new) == (block == 1)
        assert all(t.device.type == ("meta" if block == 1 else "cpu") for t in new.parameters())
        assert _ppl(pair.model, pair.windows) == pytest.approx(reference, rel=1e-5)
        with models.materialized(new):
            torch.testing.assert_close(new.weight, _linear_copy(pair.plain.get_submodule(name)).weight)
    finally:
        assert models.set_module(pair.model, name, old) is new  # the original keeps its hooks
    assert pair.model.get_submodule(name) is old
    assert _ppl(pair.model, pair.windows) == pytest.approx(reference, rel=1e-6)


def test_set_module_refuses_meta_tensors_on_a_dispatched_model(pair):
    name = _down_name(pair.model, 1)
    old = pair.model.get_submodule(name)
    weight = models.projection_weight(old)  # outside materialized(): meta
    with torch.device("meta"):
        new = nn.Linear(weight.shape[1], weight.shape[0])
    with pytest.raises(ValueError, match=r"meta device \(weight, bias\).*materialized"):
        models.set_module(pair.model, name, new)
    assert pair.model.get_submodule(name) is old


def test_cpu_offload_with_a_state_dict_weights_map(tiny_mistral):
    """accelerate.cpu_offload keeps every weight in a host-memory dict (what a GPU machine does to "cpu" entries)."""
    from accelerate import cpu_offload

    reference = tiny_mistral
    from model_factories import tiny_mistral as build

    model = cpu_offload(build(), execution_device=torch.device("cpu"))
    assert all(p.device.type == "meta" for p in model.parameters())
    ids = torch.randint(3, 512, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(ids).logits
        torch.testing.assert_close(model(ids).logits, expected)
    name = _down_name(model, 1)
    with models.materialized(model.get_submodule(name)) as old:
        new = _linear_copy(old)
    models.set_module(model, name, new)
    assert new.weight.device.type == "meta"
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, expected)
    with models.materialized(model):
        torch.testing.assert_close(model.lm_head.weight, reference.lm_head.weight, rtol=0, atol=0)
    assert model.lm_head.weight.device.type == "meta"
