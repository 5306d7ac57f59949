"""collect_block_statistics: sums equal the ones computed from the model's own hidden states, gradients equal
autograd's, the held-out split is by whole windows, position sets add up, and bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch
from model_factories import FACTORIES
from tcompress.analysis.activations import (
    BlockStatistics,
    Moments,
    collect_block_statistics,
    per_window_loss,
    split_windows,
)


def _windows(n=6, t=12, seed=0):
    return torch.randint(3, 500, (n, t), generator=torch.Generator().manual_seed(seed))


def _rows(h: torch.Tensor, positions: str) -> torch.Tensor:
    h = h if positions == "all" else h[:, 1:]
    return h.reshape(-1, h.shape[-1]).double()


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_sums_match_hidden_states(family):
    model = FACTORIES[family]()
    windows = _windows()
    stats = collect_block_statistics(model, windows, batch_size=4, holdout=0.25)
    with torch.no_grad():
        hidden = model(windows, output_hidden_states=True, use_cache=False).hidden_states
    for split, idx in (("train", [i for i in range(6) if i not in stats.heldout_windows]), ("heldout", None)):
        idx = list(stats.heldout_windows) if idx is None else idx
        for positions in ("no_first", "all"):
            for layer in (0, 1):
                m = stats.moments(layer, positions, split)
                x = _rows(hidden[layer][idx], positions)
                if layer + 1 < len(hidden) - 1:
                    y = _rows(hidden[layer + 1][idx], positions)
                    torch.testing.assert_close(m.in_out, x.T @ y, rtol=1e-9, atol=1e-9)
                    torch.testing.assert_close(m.out_sq, (y * y).sum(0), rtol=1e-9, atol=1e-9)
                assert m.count == x.shape[0]
                torch.testing.assert_close(m.in_in, x.T @ x, rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(m.sum_in, x.sum(0), rtol=1e-9, atol=1e-9)


def test_gradients_match_autograd():
    model = FACTORIES["llama"]()
    windows = _windows(n=4)
    stats = collect_block_statistics(model, windows, gradients=True, holdout=0.0, batch_size=3)
    out = model(windows, output_hidden_states=True, use_cache=False)
    for h in out.hidden_states[:2]:
        h.retain_grad()
    per_window_loss(out.logits, windows).backward()
    for layer in (0, 1):
        g = _rows(out.hidden_states[layer].grad, "all")
        m = stats.moments(layer, "all")
        assert m.grad_count == m.count == g.shape[0]
        torch.testing.assert_close(m.grad_grad, g.T @ g, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(m.grad_sum, g.sum(0), rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(m.grad_second_moment(), g.T @ g / g.shape[0], rtol=1e-6, atol=1e-12)


def test_gradients_with_frozen_parameters_and_grads_left_alone():
    model = FACTORIES["gpt2"]()
    for p in model.parameters():
        p.requires_grad_(False)
    stats = collect_block_statistics(model, _windows(n=3), gradients=True, holdout=0.0, layers=[0])
    assert stats.moments(0).grad_count == stats.moments(0).count
    assert float(stats.moments(0).grad_grad.trace()) > 0
    model = FACTORIES["gpt2"]()
    collect_block_statistics(model, _windows(n=3), gradients=True, holdout=0.0)
    assert all(p.grad is None for p in model.parameters())


def test_gradient_pass_freezes_the_parameters_and_restores_their_flags():
    model = FACTORIES["mistral"]()
    model.model.embed_tokens.weight.requires_grad_(False)  # a mix of flags, to see each restored as it was
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    kept = torch.ones_like(model.lm_head.weight)
    model.lm_head.weight.grad = kept
    seen = []
    hook = model.model.layers[1].register_forward_hook(
        lambda *_: seen.append([p.requires_grad for p in model.parameters()])
    )
    windows = _windows(n=4)
    try:
        stats = collect_block_statistics(model, windows, gradients=True, holdout=0.0, batch_size=2)
    finally:
        hook.remove()
    assert seen and not any(any(flags) for flags in seen)  # frozen during every forward of the pass
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert model.lm_head.weight.grad is kept
    assert all(p.grad is None for name, p in model.named_parameters() if name != "lm_head.weight")
    # The statistics are those of autograd with the parameters left trainable.
    model.model.embed_tokens.weight.requires_grad_(True)
    out = model(windows, output_hidden_states=True, use_cache=False)
    for h in out.hidden_states[:2]:
        h.retain_grad()
    per_window_loss(out.logits, windows).backward()
    for layer in (0, 1):
        g = _rows(out.hidden_states[layer].grad, "all")
        torch.testing.assert_close(stats.moments(layer, "all").grad_grad, g.T @ g, rtol=1e-6, atol=1e-12)
    # Capturing only block 1 (its input then becomes the leaf) gives block 1 the same gradients.
    only = collect_block_statistics(model, windows, layers=[1], gradients=True, holdout=0.0, batch_size=2)
    torch.testing.assert_close(only.moments(1, "all").grad_grad, stats.moments(1, "all").grad_grad)


def test_heldout_split_is_by_window_and_seeded():
    train, heldout = split_windows(10, 0.2, seed=3)
    assert len(heldout) == 2 and sorted(train + heldout) == list(range(10))
    assert split_windows(10, 0.2, seed=3) == (train, heldout)
    assert split_windows(10, 0.0) == (list(range(10)), [])
    assert len(split_windows(3, 0.01)[1]) == 1  # at least one window held out when asked
    stats = collect_block_statistics(FACTORIES["llama"](), _windows(n=5, t=9), holdout=0.2)
    assert stats.tokens("no_first", "heldout") == 8 and stats.tokens("all", "train") == 36
    assert stats.to_dict()["tokens_per_block"] == {
        "no_first/train": 32,
        "no_first/heldout": 8,
        "all/train": 36,
        "all/heldout": 9,
    }


def test_moments_algebra():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 5, generator=gen), torch.randn(50, 5, generator=gen)
    a, b = Moments.zeros(5, "cpu"), Moments.zeros(5, "cpu")
    a.update(x[:20], y[:20])
    b.update(x[20:], y[20:])
    m = a + b
    xd, yd = x.double(), y.double()
    torch.testing.assert_close(m.cov_in(), torch.cov(xd.T, correction=0))
    torch.testing.assert_close(m.var_out(), yd.var(0, unbiased=False))
    r = m.residual_target()
    torch.testing.assert_close(r.cross_cov(), (xd - xd.mean(0)).T @ ((yd - xd) - (yd - xd).mean(0)) / 50)
    torch.testing.assert_close(r.var_out(), (yd - xd).var(0, unbiased=False))


def test_bad_input_messages():
    model = FACTORIES["llama"]()
    with pytest.raises(ValueError, match=r"\(num_windows, T\) int64"):
        collect_block_statistics(model, torch.zeros(2, 8))
    with pytest.raises(ValueError, match="token ids must lie in"):
        collect_block_statistics(model, torch.full((2, 8), 10_000))
    with pytest.raises(ValueError, match="out of range for 2 blocks"):
        collect_block_statistics(model, _windows(), layers=[2])
    with pytest.raises(ValueError, match=r"holdout must be a fraction in \[0, 1\)"):
        collect_block_statistics(model, _windows(), holdout=1.0)
    with pytest.raises(ValueError, match="keep one for training"):
        collect_block_statistics(model, _windows(n=1), holdout=0.5)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        collect_block_statistics(model, _windows(), batch_size=0)
    stats = collect_block_statistics(model, _windows(), layers=[-1], holdout=0.0)
    assert isinstance(stats, BlockStatistics) and stats.layers == (1,)
    with pytest.raises(ValueError, match="block 0 was not captured"):
        stats.moments(0)
    with pytest.raises(ValueError, match="split is empty"):
        stats.moments(1, split="heldout")
    with pytest.raises(ValueError, match="positions must be one of"):
        stats.moments(1, positions="first")
    with pytest.raises(ValueError, match="use gradients=True"):
        stats.moments(1).grad_second_moment()


def test_fp16_gradients_are_loss_scaled_and_unscaled_exactly(tiny_mistral, monkeypatch):
    """fp16 backward passes scale the loss by 2^⌈log2(T-1)⌉ (so tiny per-token gradients do not underflow) and divide
    it out in float64: the gradient moments match the fp32 model's to fp16 precision; fp32 runs are not scaled."""
    import copy

    from tcompress.analysis import activations

    ids = torch.randint(0, tiny_mistral.config.vocab_size, (2, 130), generator=torch.Generator().manual_seed(0))
    scales = []
    original = activations._Collector._add_gradients

    def spy(self, *args):
        scales.append(self.loss_scale)
        return original(self, *args)

    monkeypatch.setattr(activations._Collector, "_add_gradients", spy)
    ref = collect_block_statistics(tiny_mistral, ids, layers=[1], gradients=True, holdout=0.0)
    assert set(scales) == {1.0}
    scales.clear()
    half = collect_block_statistics(copy.deepcopy(tiny_mistral).half(), ids, layers=[1], gradients=True, holdout=0.0)
    assert set(scales) == {256.0}  # T - 1 = 129 -> 2^8
    want, got = ref.moments(1).grad_second_moment(), half.moments(1).grad_second_moment()
    assert float((got - want).norm() / want.norm()) < 2e-3
