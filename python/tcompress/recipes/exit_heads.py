"""Exit heads around a model: build (logit lens or tuned), train on calibration windows, save and load.

Training minimises, for every head depth k, KL(p_final ‖ p_k) between the model's own next-token distribution and the
head's, over calibration tokens (the tuned lens). The model is frozen; only the translators (float32) learn.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import architecture, block_outputs, execution_device
from ..nn.exit_head import ExitHeads

HEADS_FILE = "exit_heads.safetensors"
CONFIG_FILE = "exit_heads.json"
FORMAT = "tcompress-exit-heads"
VERSION = 1


def build_exit_heads(
    model: nn.Module, depths: list[int] | None = None, kind: str = "tuned", rank: int | None = None
) -> ExitHeads:
    """Exit heads for ``model`` at ``depths`` (default: every depth 1 .. num_blocks-1), reading out through the model's
    own final norm and head. Tuned heads start as the logit lens (translators at zero). The translators live on the
    head's execution device, also when accelerate has offloaded the head (weights on ``meta``).

    Raises:
        ValueError: a depth outside [1, num_blocks - 1], or the errors of :class:`ExitHeads`.
    """
    spec = architecture(model)
    num_blocks = len(spec.blocks(model))
    if depths is None:
        depths = list(range(1, num_blocks))
    bad = [k for k in depths if not 1 <= int(k) < num_blocks]
    if bad:
        raise ValueError(f"build_exit_heads: depths must lie in [1, {num_blocks - 1}] for this model; got {bad}")
    head = spec.head(model)
    heads = ExitHeads(depths, spec.final_norm(model), head, head.weight.shape[1], kind=kind, rank=rank)
    return heads.to(execution_device(head))


def _set_requires_grad(p: torch.Tensor, flag: bool) -> None:
    if p.is_inference():
        # An offloaded placeholder that accelerate re-created while an inference_mode forward ran: torch lets such a
        # tensor change requires_grad only inside inference mode.
        with torch.inference_mode():
            p.requires_grad_(flag)
    else:
        p.requires_grad_(flag)


def _kl_final_to_head(log_p_final: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
    """(N, V) final log-probs, (N, V) head logits -> (N,) KL(p_final ‖ p_head) in nats, fp32."""
    log_q = F.log_softmax(head_logits.float(), dim=-1)
    return F.kl_div(log_q, log_p_final, log_target=True, reduction="none").sum(-1)


def train_exit_heads(
    heads: ExitHeads,
    model: nn.Module,
    windows: torch.Tensor,
    *,
    steps: int = 100,
    tokens_per_step: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains tuned heads in place with Adam on KL(p_final ‖ p_k), summed over depths; returns a training record.

    Each step takes the next calibration window (cycling), runs the frozen model once, and uses ``tokens_per_step``
    positions drawn at random from it (the head GEMM over the vocabulary dominates the cost, so the budget is in
    tokens: ``steps · tokens_per_step``).

    Args:
        heads: tuned heads built around ``model`` (:func:`build_exit_heads`).
        model: the model, left unchanged.
        windows: (n, L) int64 calibration windows, e.g. :func:`tcompress.data.calibration_windows`.
        steps: optimizer steps.
        tokens_per_step: positions per step (capped by the window length).
        lr: Adam learning rate.
        seed: the position sampler's seed.
        progress: show a tqdm progress bar (with the current mean KL).

    Returns:
        ``{"steps", "tokens", "lr", "seconds", "kl_first", "kl_last"}``: mean KL per depth (nats) on the first and
        last step.

    Raises:
        ValueError: heads that are the logit lens, windows that are not (n, L) integer ids, a non-positive budget.
    """
    if heads.kind != "tuned":
        raise ValueError("train_exit_heads: the logit lens has nothing to train; build heads with kind='tuned'")
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"train_exit_heads: windows must be a 2-D int64 tensor (n, L); got {windows!r:.80}")
    for name, value in (("steps", steps), ("tokens_per_step", tokens_per_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train_exit_heads: {name} must be a positive int; got {value!r}")
    device = execution_device(model.get_input_embeddings())
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(heads.translators.parameters(), lr=lr)
    # By name: accelerate replaces an offloaded parameter (on `meta`) by a new object each time its hook unloads it.
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    kl_first: list[float] = []
    kl_last: list[float] = []
    tokens = 0
    start = time.perf_counter()
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        bar = tqdm(range(steps), desc="exit heads", unit="step", disable=not progress)
        for step in bar:
            ids = windows[step % windows.shape[0]][None].long().to(device)
            with torch.no_grad():
                hidden, logits = block_outputs(model, ids)
            n = min(tokens_per_step, ids.shape[1])
            pick = torch.randperm(ids.shape[1], generator=gen)[:n].to(device)
            log_p_final = F.log_softmax(logits[0, pick].float(), dim=-1)
            losses = [
                _kl_final_to_head(log_p_final, heads.logits(k, hidden[k - 1][0, pick])).mean() for k in heads.depths
            ]
            optimizer.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimizer.step()
            values = [float(x.detach()) for x in losses]
            kl_first = kl_first or values
            kl_last = values
            tokens += n
            bar.set_postfix(kl=f"{sum(values) / len(values):.4f}")
    finally:
        for name, p in model.named_parameters():
            _set_requires_grad(p, frozen.get(name, p.requires_grad))
        model.train(was_training)
    return {
        "steps": steps,
        "tokens": tokens,
        "lr": lr,
        "seconds": time.perf_counter() - start,
        "kl_first": dict(zip(map(str, heads.depths), kl_first)),
        "kl_last": dict(zip(map(str, heads.depths), kl_last)),
    }


def save_exit_heads(heads: ExitHeads, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes ``exit_heads.safetensors`` (the translators) and ``exit_heads.json`` (config, parameter count, ``extra``
    such as the training record) into ``directory`` (created if needed); returns the directory.

    The JSON is written last, so a folder with a config always has its tensors.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().float().contiguous().cpu() for name, t in heads.state_dict().items()}
    save_file(tensors, str(directory / HEADS_FILE))
    config = {"format": FORMAT, "version": VERSION, **heads.config(), "parameters": heads.parameter_count()}
    if extra:
        config["extra"] = extra
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


def load_exit_heads(directory: str | Path, model: nn.Module) -> ExitHeads:
    """Exit heads saved by :func:`save_exit_heads`, rebuilt around ``model``'s final norm and head.

    Raises:
        FileNotFoundError: the folder lacks ``exit_heads.json`` or ``exit_heads.safetensors``.
        ValueError: a config of another format or version, heads for another hidden size or depth, or tensors that
            do not match the config (a corrupted or foreign file).
    """
    directory = Path(directory)
    for name in (CONFIG_FILE, HEADS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"load_exit_heads: {directory / name} not found (expected a save_exit_heads folder)"
            )
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"load_exit_heads: {directory / CONFIG_FILE} is not valid JSON ({err})") from None
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ValueError(
            f"load_exit_heads: expected format {FORMAT!r} version {VERSION}; got {config.get('format')!r} "
            f"version {config.get('version')!r}"
        )
    heads = build_exit_heads(model, config["depths"], kind=config["kind"], rank=config["rank"])
    if heads.hidden_size != config["hidden_size"]:
        raise ValueError(
            f"load_exit_heads: heads were trained for hidden size {config['hidden_size']}; this model has "
            f"{heads.hidden_size}"
        )
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(directory / HEADS_FILE))
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"load_exit_heads: cannot read {directory / HEADS_FILE}: {err}") from None
    try:
        heads.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"load_exit_heads: tensors in {directory / HEADS_FILE} do not match the config: {err}"
        ) from None
    bad = [name for name, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"load_exit_heads: non-finite values in {bad[:4]}")
    return heads


def head_parameter_report(heads: ExitHeads, model: nn.Module) -> dict[str, Any]:
    """The heads' parameter cost: count, and as a fraction of the model's parameters."""
    model_params = sum(p.numel() for p in model.parameters())
    added = heads.parameter_count()
    return {
        "head_parameters": added,
        "model_parameters": model_params,
        "fraction_of_model": added / model_params if model_params else math.nan,
        "depths": list(heads.depths),
        "rank": heads.rank,
    }
