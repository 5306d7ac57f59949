"""Token difficulty: at which depth does an exit head already predict what the full model predicts?

Per token and head depth k: KL(p_final ‖ p_k) and whether the head's argmax equals the final one. A token is *easy at
depth k* (for a KL threshold τ) when the argmaxes agree and KL < τ at k; the strict variant also asks this at every
later head depth. The curves are the easy fraction against depth and τ; a token's exit depth is the first depth at
which it is (strictly) easy, and the summary gives the fraction exiting at or before 50% and 75% of the depth.

:func:`kl_sensitivity` checks that the KL criterion means what it seems to: for the tokens judged easy, it actually
skips the remaining blocks (position by position, a batch of windows at a time, with the skipped blocks' keys/values
propagated from the exited state, see :mod:`tcompress.early_exit.runtime`) and measures the KL and loss change that
skipping really causes. Its null is the same skipping done to tokens nobody judged: as many tokens drawn at random
(seeded) from all predicted positions, exiting at the easy tokens' depths (shuffled among them). Easy tokens that are
really easy cost clearly less than these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..early_exit import EarlyExitLM, policy_tokens
from ..models import block_outputs, block_stepper, execution_device
from ..nn.exit_head import ExitHeads

DEFAULT_TAUS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class TokenStats:
    """Per-token measurements over all predicted positions of all windows (N tokens, D head depths).

    Attributes:
        depths: the head depths, increasing.
        num_blocks: the model's number of blocks.
        kl: (N, D) float32 KL(p_final ‖ p_k) in nats.
        agree: (N, D) bool, head argmax == final argmax.
        window_length: L of the windows (positions 0..L-2 of each are measured).
    """

    depths: list[int]
    num_blocks: int
    kl: torch.Tensor
    agree: torch.Tensor
    window_length: int

    def easy(self, tau: float, strict: bool = False) -> torch.Tensor:
        """(N, D) bool: easy at each depth (strict: also at every later head depth)."""
        ok = self.agree & (self.kl < tau)
        if strict:
            # Suffix-AND over depths: flip, cumulative product, flip back.
            ok = ok.flip(1).to(torch.int8).cumprod(1).flip(1).bool()
        return ok

    def exit_depths(self, tau: float, strict: bool = False) -> torch.Tensor:
        """(N,) int64: the first depth at which each token is easy, or num_blocks where none is."""
        ok = self.easy(tau, strict)
        depths = torch.tensor(self.depths + [self.num_blocks])
        first = torch.where(ok.any(1), ok.to(torch.int8).argmax(1), torch.full((ok.shape[0],), len(self.depths)))
        return depths[first]


@dataclass
class DifficultySummary:
    """The curves and fractions of :func:`summarize`, JSON-ready (dict keys are strings).

    Attributes:
        kind: the heads' kind (``"lens"`` or ``"tuned"``).
        depths, num_blocks, tokens: as in :class:`TokenStats`.
        kl_mean, kl_median, agreement: per depth.
        easy_fraction, easy_fraction_strict: ``{tau: {depth: fraction}}``.
        exit_by_50pct, exit_by_75pct: ``{tau: fraction}`` of tokens whose strict exit depth is <= 50% / 75% of
            num_blocks.
        exit_by_50pct_loose, exit_by_75pct_loose: the same with the first (not necessarily lasting) easy depth.
    """

    kind: str
    depths: list[int]
    num_blocks: int
    tokens: int
    kl_mean: dict[str, float]
    kl_median: dict[str, float]
    agreement: dict[str, float]
    easy_fraction: dict[str, dict[str, float]]
    easy_fraction_strict: dict[str, dict[str, float]]
    exit_by_50pct: dict[str, float]
    exit_by_75pct: dict[str, float]
    exit_by_50pct_loose: dict[str, float]
    exit_by_75pct_loose: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


def _check_batch_size(who: str, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int (windows per step); got {batch_size!r}")


@torch.inference_mode()
def token_stats(
    model: nn.Module, heads: ExitHeads, windows: torch.Tensor, *, batch_size: int = 8, progress: bool = False
) -> TokenStats:
    """KL(p_final ‖ p_k) and argmax agreement per token and head depth over ``windows`` (n, L).

    One full forward per ``batch_size`` windows (block outputs kept by hooks), then each head on every position
    0..L-2, one window at a time (so the peak memory holds a few (L, vocab) tensors, not (batch, L, vocab) ones).

    Raises:
        ValueError: windows that are not (n, L >= 2) integer ids, or a batch size that is not a positive int.
    """
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"token_stats: windows must be (n, L >= 2) int64 ids; got {windows!r:.80}")
    _check_batch_size("token_stats", batch_size)
    device = execution_device(model.get_input_embeddings())
    kls, agrees = [], []
    starts = range(0, windows.shape[0], batch_size)
    for start in tqdm(starts, desc="token difficulty", unit="batch", disable=not progress):
        ids = windows[start : start + batch_size].long().to(device)
        hidden, logits = block_outputs(model, ids)
        for b in range(ids.shape[0]):
            log_p = F.log_softmax(logits[b, :-1].float(), dim=-1)
            top = log_p.argmax(-1)
            kl_cols, agree_cols = [], []
            for k in heads.depths:
                log_q = F.log_softmax(heads.logits(k, hidden[k - 1][b, :-1]).float(), dim=-1).to(log_p.device)
                kl_cols.append(F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).clamp_min(0))
                agree_cols.append(log_q.argmax(-1) == top)
            kls.append(torch.stack(kl_cols, 1).cpu())
            agrees.append(torch.stack(agree_cols, 1).cpu())
    return TokenStats(
        list(heads.depths), block_stepper(model).num_blocks, torch.cat(kls), torch.cat(agrees), windows.shape[1]
    )


def summarize(stats: TokenStats, kind: str, taus: tuple[float, ...] = DEFAULT_TAUS) -> DifficultySummary:
    """The easy-token curves and exit fractions of ``stats`` for each τ in ``taus``."""
    depth_keys = [str(k) for k in stats.depths]
    n = stats.kl.shape[0]

    def by_depth(values: torch.Tensor) -> dict[str, float]:
        return dict(zip(depth_keys, (float(v) for v in values)))

    easy, strict, by50, by75, by50_loose, by75_loose = {}, {}, {}, {}, {}, {}
    for tau in taus:
        key = f"{tau:g}"
        easy[key] = by_depth(stats.easy(tau).float().mean(0))
        strict[key] = by_depth(stats.easy(tau, strict=True).float().mean(0))
        for out, is_strict in ((by50, True), (by50_loose, False)):
            out[key] = float((stats.exit_depths(tau, is_strict) <= 0.5 * stats.num_blocks).float().mean())
        for out, is_strict in ((by75, True), (by75_loose, False)):
            out[key] = float((stats.exit_depths(tau, is_strict) <= 0.75 * stats.num_blocks).float().mean())
    return DifficultySummary(
        kind=kind,
        depths=list(stats.depths),
        num_blocks=stats.num_blocks,
        tokens=n,
        kl_mean=by_depth(stats.kl.mean(0)),
        kl_median=by_depth(stats.kl.median(0).values),
        agreement=by_depth(stats.agree.float().mean(0)),
        easy_fraction=easy,
        easy_fraction_strict=strict,
        exit_by_50pct=by50,
        exit_by_75pct=by75,
        exit_by_50pct_loose=by50_loose,
        exit_by_75pct_loose=by75_loose,
    )


@dataclass
class SensitivityResult:
    """What skipping really costs for tokens judged easy (:func:`kl_sensitivity`).

    Attributes:
        tau: the KL threshold that judged tokens easy (first easy depth, loose criterion).
        easy_tokens, other_tokens: counts.
        predicted_kl_easy: mean KL at the judged depth in the full-depth analysis (what the criterion saw).
        actual_kl_easy: mean KL(p_full ‖ p_emitted) when the remaining blocks are skipped for real.
        actual_kl_other: the same for the tokens that ran every block (they see the propagated keys/values).
        loss_change_easy, loss_change_other: mean change of the next-token NLL (emitted minus full), nats.
        ppl_full, ppl_skipped: perplexity of the full model and of the skipping policy on the same tokens.
        mean_depth: mean blocks run per token under the policy.
        random_tokens: the null's token count, equal to ``easy_tokens``: tokens drawn at random (seed
            ``random_seed``) from all predicted positions, exiting at the easy tokens' depths in shuffled order while
            every other token runs every block.
        random_seed: the seed of the CPU ``torch.Generator`` that drew them.
        actual_kl_random, loss_change_random: mean KL and NLL change on the null's tokens when they really skip (NaN
            when no token is easy).
    """

    tau: float
    easy_tokens: int
    other_tokens: int
    predicted_kl_easy: float
    actual_kl_easy: float
    actual_kl_other: float
    loss_change_easy: float
    loss_change_other: float
    ppl_full: float
    ppl_skipped: float
    mean_depth: float
    random_tokens: int = 0
    random_seed: int = 0
    actual_kl_random: float = math.nan
    loss_change_random: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


@torch.inference_mode()
def kl_sensitivity(
    model: nn.Module,
    heads: ExitHeads,
    windows: torch.Tensor,
    stats: TokenStats,
    tau: float,
    *,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
) -> SensitivityResult:
    """Skips the blocks after each token's first easy depth (τ) for real and measures KL and loss change, then does
    the same for the null: as many random tokens (``seed``) exiting at the same depths.

    ``stats`` must come from :func:`token_stats` on the same model, heads and windows. Each position exits at its
    judged depth (an oracle gate); the last position of a window, which predicts nothing, runs the full depth.
    ``batch_size`` windows step together (:func:`tcompress.early_exit.policy.policy_logits`). The null costs a
    second pass over the windows (none when no token is easy).

    Raises:
        ValueError: stats of other windows, or a batch size that is not a positive int.
    """
    n_windows, length = windows.shape
    if stats.kl.shape[0] != n_windows * (length - 1):
        raise ValueError(
            f"kl_sensitivity: stats cover {stats.kl.shape[0]} tokens; windows {tuple(windows.shape)} predict "
            f"{n_windows * (length - 1)} (compute stats on the same windows)"
        )
    _check_batch_size("kl_sensitivity", batch_size)
    exit_depths = stats.exit_depths(tau).view(n_windows, length - 1)
    runner = EarlyExitLM(model, heads, threshold=2.0, check_layers=[])
    kl_at_exit = torch.cat([stats.kl, torch.zeros(stats.kl.shape[0], 1)], 1)
    column = {k: c for c, k in enumerate(stats.depths + [stats.num_blocks])}
    predicted = kl_at_exit.gather(1, torch.tensor([column[int(d)] for d in exit_depths.flatten()])[:, None])[:, 0]
    actual, change, nll_full, nll_skip, depth_sum = _skip_for_real(
        runner, windows, exit_depths, stats.num_blocks, batch_size, progress
    )
    easy = exit_depths.flatten() < stats.num_blocks
    tokens = actual.numel()

    def mean(x: torch.Tensor) -> float:
        return float(x.double().mean()) if x.numel() else math.nan

    random_kl = random_change = math.nan
    if easy.any():
        random_depths = _random_null_depths(exit_depths.flatten(), stats.num_blocks, seed)
        chosen = random_depths < stats.num_blocks
        null_kl, null_change, *_ = _skip_for_real(
            runner, windows, random_depths.view(n_windows, length - 1), stats.num_blocks, batch_size, progress
        )
        random_kl, random_change = mean(null_kl[chosen]), mean(null_change[chosen])
    return SensitivityResult(
        tau=tau,
        easy_tokens=int(easy.sum()),
        other_tokens=int((~easy).sum()),
        predicted_kl_easy=mean(predicted[easy]),
        actual_kl_easy=mean(actual[easy]),
        actual_kl_other=mean(actual[~easy]),
        loss_change_easy=mean(change[easy]),
        loss_change_other=mean(change[~easy]),
        ppl_full=math.exp(nll_full / tokens),
        ppl_skipped=math.exp(nll_skip / tokens),
        mean_depth=depth_sum / tokens,
        random_tokens=int(easy.sum()),
        random_seed=int(seed),
        actual_kl_random=random_kl,
        loss_change_random=random_change,
    )


def _random_null_depths(exit_depths: torch.Tensor, num_blocks: int, seed: int) -> torch.Tensor:
    """(N,) exit depths (num_blocks = no exit) -> (N,): as many tokens drawn at random exit at the same depths.

    The tokens are a uniform draw without replacement from all N positions (easy ones included: the null knows
    nothing of difficulty); the exiting tokens' depths are dealt to them in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    exiting = exit_depths[exit_depths < num_blocks]
    chosen = torch.randperm(exit_depths.numel(), generator=generator)[: exiting.numel()]
    out = torch.full_like(exit_depths, num_blocks)
    out[chosen] = exiting[torch.randperm(exiting.numel(), generator=generator)]
    return out


def _skip_for_real(
    runner: EarlyExitLM,
    windows: torch.Tensor,
    exit_depths: torch.Tensor,
    num_blocks: int,
    batch_size: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, float, float, int]:
    """windows (n, L), exit depths (n, L-1) -> (KL (N,), NLL change (N,), full NLL sum, skipped NLL sum, depth sum)
    with every position exiting at its depth for real (the last position of a window runs every block)."""
    n_windows = windows.shape[0]
    forced = torch.cat([exit_depths, torch.full((n_windows, 1), num_blocks, dtype=exit_depths.dtype)], 1)
    device = execution_device(runner.model.get_input_embeddings())
    actual_kl, loss_change = [], []
    nll_full = nll_skip = 0.0
    depth_sum = 0
    starts = range(0, n_windows, batch_size)
    for start in tqdm(starts, desc="kl sensitivity", unit="batch", disable=not progress):
        ids = windows[start : start + batch_size].long().to(device)
        result = policy_tokens(runner, ids, forced[start : start + batch_size])
        actual_kl.append(result.kl.flatten())
        loss_change.append((result.nll - result.nll_full).flatten())
        nll_full += float(result.nll_full.double().sum())
        nll_skip += float(result.nll.double().sum())
        depth_sum += int(result.depths.sum())
    return torch.cat(actual_kl), torch.cat(loss_change), nll_full, nll_skip, depth_sum
