"""PrefixReplay: the logits of a model whose first blocks are replayed equal the full forward's to the bit, also
with a change at or after the first block that runs; unrecorded batches refuse; the blocks always come back."""

from __future__ import annotations

import pytest
import torch
from model_factories import FACTORIES, deeper
from tcompress import evaluate, models
from tcompress.models import PrefixReplay


def _windows(n=3, t=24):
    return torch.randint(3, 500, (n, t), generator=torch.Generator().manual_seed(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])  # deeper() cannot rebuild qwen2
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_replayed_logits_equal_the_full_forward(family, layer):
    model = deeper(FACTORIES[family], layers=4)
    windows = _windows()
    blocks_before = list(models.architecture(model).blocks(model))
    want = [_logits(model, windows[i : i + 1]) for i in range(3)]
    replay = PrefixReplay(model, layer)
    replay.record(windows)
    assert len(replay.recorded) == 3 and replay.nbytes == 3 * 24 * 64 * 4
    with replay.replaying():
        blocks = models.architecture(model).blocks(model)
        assert all(type(b).__name__ in ("_PassThrough", "_Replay") for b in list(blocks)[:layer])
        got = [_logits(model, windows[i : i + 1]) for i in range(3)]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert list(models.architecture(model).blocks(model)) == blocks_before


def test_a_change_from_the_first_running_block_on_is_evaluated_exactly():
    model = deeper(FACTORIES["llama"], layers=4)
    windows = _windows()
    blocks = models.architecture(model).blocks(model)

    def halve_input(module, args, kwargs):
        return (args[0] * 0.5, *args[1:]), kwargs

    handle = blocks[2].register_forward_pre_hook(halve_input, with_kwargs=True)
    try:
        want = evaluate.perplexity(model, windows, progress=False).ppl
        replay = PrefixReplay(model, 2)
        # Recorded with the hook in place: block 2's input is taken before the hook halves it.
        replay.record(windows)
        with replay.replaying():
            got = evaluate.perplexity(model, windows, progress=False).ppl
    finally:
        handle.remove()
    assert got == want
    assert got != evaluate.perplexity(model, windows, progress=False).ppl


def test_an_unrecorded_batch_raises_and_the_blocks_come_back():
    model = FACTORIES["mistral"]()
    windows = _windows()
    replay = PrefixReplay(model, 1)
    replay.record(windows[:2])
    before = list(models.architecture(model).blocks(model))
    with pytest.raises(RuntimeError, match="this batch was not recorded"):
        with replay.replaying():
            _logits(model, windows[2:3])
    assert list(models.architecture(model).blocks(model)) == before
    with pytest.raises(RuntimeError, match="this batch was not recorded"):  # another batch size
        with replay.replaying():
            _logits(model, windows[:2])


def test_bad_arguments_say_what_was_expected():
    model = FACTORIES["gpt2"]()
    for layer in (0, 2, -1, True):
        with pytest.raises(ValueError, match=r"layer must be a block index in \[1, 2\)"):
            PrefixReplay(model, layer)
    with pytest.raises(ValueError, match=r"windows must be \(num_windows, T\) token ids"):
        PrefixReplay(model, 1).record(torch.arange(5))
