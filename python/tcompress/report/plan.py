"""``tcompress report MODEL --plan``: each step's peak device and host memory and its work, before anything runs.

The estimates need only the model's configuration (a folder holding just ``config.json`` will do): the shapes give
every term below, and each term is what the code keeps alive at that step's peak. This is the one place where the
memory behaviour of the report is written down; a change to a step's memory behaviour belongs here too.

Notation: L blocks, hidden size d, MLP width f, vocabulary V, b bytes per parameter of the model's dtype, P the
parameters (P_proj those of the block projections, whose largest is out_max × in_max), T a window's length, n
calibration windows of length T_c, e evaluation windows of length T_e (batch 1), G the float64 input moments of one
group of blocks (:mod:`tcompress.analysis.projection_inputs`: 8·(3d² + f²) per block, grouped up to 2 GiB; with
fewer calibration tokens n than an input's features the rows are kept instead, 8·n·in).

Always on the device: the weights, W = P·b, and the forward activations of one evaluation window,
A(T) = T·(16·d·b + 4·f·b + V·(b + 8)) (hidden states and the MLP's intermediate, and the logits in the model's dtype
plus their float32 upcast and log-softmax).

=============  ===============================================================  =====================================
step           device (beyond W + A)                                            host
=============  ===============================================================  =====================================
baseline       —                                                                —
spectral       held factors at the largest ratio ρ_max·P_proj·b + G + one       —
               projection's float64 SVD: 8·(3·out·in + min·(out+in) + 2·in²)
quantization   quantized projections P_proj·(bits/8) + fp16 scales; rotation    one copy of the weights, W (to undo
               temporaries 8·d² + 20·2²² (Q in float64; one 2²²-element slice   the rotation)
               of a table in float64, rotated, recast)
wall           G + one projection's float64 work: 8·(6·out·in + min·(out+in))   Ŵ of every projection, P_proj·b, and
                                                                                W when rotated
linearity      block statistics, 32·d²·L (train/held-out × ΣxᵀX, ΣxᵀY,          the first-position sums, 32·d²·L
               float64); fits 5·8·d²
substitution   the statistics above (clean fits) + maps 4·d² per block          the first-position sums
geometry       statistics with gradients 48·d²·g (g blocks) + autograd          48·d²·g; the folded head 8·V·d and
               activations of one window T_c·L·(12·d + 5·f)·b + logits          WᵀW 8·d²
               T_c·V·16
early-exit     heads 4·(d² + d)·k (k depths) + head logits of one window,       —
               T·V·4·(k + 2)
=============  ===============================================================  =====================================

On a CPU the device is the host: a step's peak resident memory is the sum of both columns (plus the Python process,
~0.5 GB). ``bench/scale_report.py`` checks these formulas against measured peaks on random models with Mistral-7B's
and GPT-2 XL's widths.

Work: tokens through the whole model besides the evaluations (a moment group's passes stop after its last block, so
streaming all L blocks one group at a time costs Σ_groups (last block + 1)/L passes over the calibration tokens), and
evaluations: perplexity runs over the evaluation windows.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from .budgets import Budget, depth_blocks, spaced_layers

GIB = 1 << 30
#: Tokens the whole WikiText-2 test text gives when a plan has no tokenizer (287,644 with GPT-2's; Llama-family
#: tokenizers give ~10-20% more).
FULL_TEXT_TOKENS = 330_000
#: The Python process, torch and transformers before any weight is loaded.
PROCESS_BYTES = 512 << 20
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The sizes a plan needs, read from a transformers config.

    Attributes:
        family: ``"gpt2"`` or a Llama-style family. num_blocks, hidden, mlp, vocab, heads, kv_heads: L, d, f, V.
        tied: the head shares the embedding. positions: the learned position table's length (GPT-2), else 0.
        context: the longest window the model takes.
    """

    family: str
    num_blocks: int
    hidden: int
    mlp: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool
    positions: int
    context: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """A transformers ``PretrainedConfig`` (GPT-2, Llama, Mistral, Qwen2) -> its shape.

        Raises:
            ValueError: a model type tcompress does not support.
        """
        model_type = getattr(config, "model_type", None)
        if model_type == "gpt2":
            d = config.n_embd
            return cls(
                "gpt2", config.n_layer, d, config.n_inner or 4 * d, config.vocab_size, config.n_head,
                config.n_head, bool(getattr(config, "tie_word_embeddings", True)), config.n_positions,
                config.n_positions,
            )  # fmt: skip
        if model_type in ("llama", "mistral", "qwen2"):
            heads = config.num_attention_heads
            return cls(
                model_type, config.num_hidden_layers, config.hidden_size, config.intermediate_size,
                config.vocab_size, heads, getattr(config, "num_key_value_heads", None) or heads,
                bool(getattr(config, "tie_word_embeddings", False)), 0, config.max_position_embeddings,
            )  # fmt: skip
        raise ValueError(f"plan: unsupported model type {model_type!r}; expected gpt2, llama, mistral or qwen2")

    def projections(self) -> list[tuple[int, int]]:
        """(out, in) of one block's projections, in forward order."""
        d, f = self.hidden, self.mlp
        if self.family == "gpt2":
            return [(3 * d, d), (d, d), (f, d), (d, f)]
        kv = self.kv_heads * (d // self.heads)
        return [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]

    @property
    def block_projection_params(self) -> int:
        return sum(o * i for o, i in self.projections())

    @property
    def params(self) -> int:
        """Every parameter: blocks (projections, biases and norms approximated by 4·d), embeddings, head."""
        blocks = self.num_blocks * (self.block_projection_params + 4 * self.hidden)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2) + self.positions * self.hidden
        return blocks + embeddings + 2 * self.hidden

    @property
    def moment_bytes_per_block(self) -> int:
        """8·(3d² + f²): the float64 input sums of one block, one per distinct input (what groups are sized by)."""
        return 8 * (3 * self.hidden**2 + self.mlp**2)

    def held_moment_bytes_per_block(self, tokens: int) -> int:
        """What one block's input moments hold for ``tokens`` calibration tokens: XᵀX (8·in²) per input, or the rows
        X (8·n·in) where there are fewer tokens than features."""
        return 8 * sum(min(tokens, n) * n for n in (self.hidden,) * 3 + (self.mlp,))


@dataclasses.dataclass
class StepPlan:
    """One step's estimate.

    Attributes:
        step: the step's name. device_bytes, host_bytes: estimated peaks (device includes the weights; host excludes
            the process itself). forward_tokens, backward_tokens: tokens through the whole model, beyond the
            evaluations (a pass that stops after block l of L counts (l + 1)/L per token).
        evaluations: perplexity runs over the evaluation windows. terms: the named terms of the peak, bytes.
        fits: whether both peaks fit the memory given. why: the reason when not.
    """

    step: str
    device_bytes: int
    host_bytes: int
    forward_tokens: int
    backward_tokens: int
    evaluations: int
    terms: dict[str, int]
    fits: bool = True
    why: str = ""


def _moment_group_bytes(shape: ModelShape, max_bytes: int, tokens: int) -> int:
    blocks = min(shape.num_blocks, max(1, max_bytes // shape.moment_bytes_per_block))
    return blocks * shape.held_moment_bytes_per_block(tokens)


def _stream_passes(shape: ModelShape, max_bytes: int) -> float:
    """Full-model-equivalent passes of one streaming of all blocks' moments, group by group."""
    per_group = max(1, max_bytes // shape.moment_bytes_per_block)
    ends = list(range(per_group, shape.num_blocks, per_group)) + [shape.num_blocks]
    return sum(ends) / shape.num_blocks


def plan_steps(
    shape: ModelShape,
    budget: Budget,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    moment_group_bytes: int = 2 << 30,
    device_memory: int | None = None,
    host_memory: int | None = None,
) -> list[StepPlan]:
    """Every step's :class:`StepPlan` for ``shape`` under ``budget`` (see the module docstring for the formulas).

    ``device_memory`` / ``host_memory`` (bytes) mark the steps that would not fit; None leaves them unjudged. On a
    CPU the two are one memory: ``fits`` compares their sum (plus :data:`PROCESS_BYTES`) with ``host_memory``.

    Raises:
        ValueError: an unknown dtype.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"plan: dtype must be one of {', '.join(DTYPE_BYTES)}; got {dtype!r}")
    b = DTYPE_BYTES[dtype]
    L, d, f, V = shape.num_blocks, shape.hidden, shape.mlp, shape.vocab
    p_proj = L * shape.block_projection_params
    weights = shape.params * b
    t_eval = min(2048 if shape.family != "gpt2" else 1024, shape.context, budget.eval_tokens or shape.context)
    t_calib = min(budget.calib_length, shape.context)
    n_calib = budget.calib_windows

    def act(t: int) -> int:
        return t * (16 * d * b + 4 * f * b + V * (b + 8))

    largest = max(shape.projections(), key=lambda s: s[0] * s[1])
    out_max, in_max = largest
    low = min(out_max, in_max)
    group = _moment_group_bytes(shape, moment_group_bytes, n_calib * t_calib)
    stream = _stream_passes(shape, moment_group_bytes)
    ratios = budget.spectral_ratios
    plans: list[StepPlan] = []

    def add(step, device_terms, host_terms, forward, backward, evaluations):
        plans.append(
            StepPlan(
                step,
                sum(device_terms.values()),
                sum(host_terms.values()),
                int(forward),
                int(backward),
                evaluations,
                {**device_terms, **{f"host: {k}": v for k, v in host_terms.items()}},
            )
        )

    base = {"weights": weights, "activations of one evaluation window": act(t_eval)}
    add("baseline", base, {}, 0.0, 0.0, 1)

    svd = 8 * (3 * out_max * in_max + low * (out_max + in_max) + 2 * in_max * in_max)
    add(
        "spectral",
        {
            **base,
            "factors at the largest ratio": int(max(ratios) * p_proj * b),
            "one group's input moments": group,
            "one projection's float64 SVD": svd,
        },
        {},
        len(budget.spectral_methods) * stream * n_calib * t_calib,
        0.0,
        len(ratios) * len(budget.spectral_methods),
    )

    bits = min(8 if "W8" in c else 4 for c in budget.quant_configs) if budget.quant_configs else 8
    quantized = p_proj * bits // 8 + p_proj // 64 * 2
    add(
        "quantization",
        {**base, "quantized projections": quantized, "rotation temporaries": 8 * d * d + 20 * (1 << 22)},
        {"copy of the weights (to undo the rotation)": weights},
        0.0,
        0.0,
        1 + 2 * len(budget.quant_configs),
    )

    wall_host = {"Ŵ of every projection": p_proj * b}
    if any(budget.wall_rotations):
        wall_host["copy of the weights (to undo the rotation)"] = weights
    add(
        "wall",
        {
            **base,
            "one group's input moments": group,
            "one projection's float64 work": 8 * (6 * out_max * in_max + low * (out_max + in_max)),
        },
        wall_host,
        4 * len(budget.wall_rotations) * stream * n_calib * t_calib,
        0.0,
        4 * len(budget.wall_rotations) + sum(budget.wall_rotations),
    )

    stats = 32 * d * d * L
    add(
        "linearity",
        {**base, "block statistics": stats, "fits": 5 * 8 * d * d},
        {"first-position sums": stats},
        (1 + 2 * budget.conditional_pairs) * n_calib * t_calib,
        0.0,
        0,
    )

    substitutions = len(budget.substitution_ranks) + int(budget.substitution_int8)
    multi = [c for c in budget.multi_block_counts if c <= L]
    substitutions += len(multi) * (2 if budget.multi_block_sequential else 1)
    add(
        "substitution",
        {**base, "block statistics": stats, "linear maps": 4 * d * d * max(multi or [1])},
        {"first-position sums": stats},
        (sum(multi) if budget.multi_block_sequential else 0) * n_calib * t_calib,
        0.0,
        substitutions,
    )

    g = len(spaced_layers(budget.geometry_layers, L))
    windows = min(budget.geometry_windows, n_calib)
    add(
        "geometry",
        {
            **base,
            "statistics with gradients": 48 * d * d * g,
            "autograd activations of one window": t_calib * L * (12 * d + 5 * f) * b + t_calib * V * 16,
        },
        {"first-position sums": 48 * d * d * g, "folded head and WᵀW": 8 * V * d + 8 * d * d},
        windows * t_calib,
        windows * t_calib,
        2 * g * len(budget.projection_positions),
    )

    k = len(depth_blocks(budget.exit_depths, L))
    t_exit = min(budget.exit_length, t_eval)
    add(
        "early-exit",
        {
            **base,
            "exit heads": 4 * (d * d + d) * k,
            "head logits of one window": t_exit * V * 4 * (k + 2),
        },
        {},
        budget.exit_train_steps * budget.exit_tokens_per_step + 3 * budget.exit_windows * budget.exit_length,
        0.0,
        0,
    )
    for p in plans:
        _judge(p, device, device_memory, host_memory)
    return plans


def _judge(p: StepPlan, device: str, device_memory: int | None, host_memory: int | None) -> None:
    reasons = []
    if device == "cpu":
        need = p.device_bytes + p.host_bytes + PROCESS_BYTES
        if host_memory is not None and need > host_memory:
            reasons.append(f"needs {need / GIB:.1f} GiB of memory, {host_memory / GIB:.1f} GiB available")
    else:
        if device_memory is not None and p.device_bytes > device_memory:
            reasons.append(f"needs {p.device_bytes / GIB:.1f} GiB on {device}, {device_memory / GIB:.1f} GiB there")
        host = p.host_bytes + PROCESS_BYTES
        if host_memory is not None and host > host_memory:
            reasons.append(f"needs {host / GIB:.1f} GiB of host memory, {host_memory / GIB:.1f} GiB available")
    if reasons:
        largest = max(p.terms.items(), key=lambda kv: kv[1])
        p.fits = False
        p.why = "; ".join(reasons) + f" (largest term: {largest[0]}, {largest[1] / GIB:.1f} GiB)"


def host_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: str) -> tuple[int | None, str]:
    """(bytes, where the number comes from) of ``device``: the GPU's own total where one is visible, else 80 GiB
    (an H100/A100 80 GB) for ``cuda``, stated as an assumption."""
    if device == "cpu":
        return host_memory_bytes(), "this machine's memory"
    import torch

    if torch.cuda.is_available():
        index = torch.device(device).index or 0
        return torch.cuda.get_device_properties(index).total_memory, torch.cuda.get_device_name(index)
    return 80 * GIB, "assumed 80 GiB (no GPU visible here)"


def render_plan(
    plans: list[StepPlan], shape: ModelShape, budget: Budget, *, dtype: str, device: str, device_note: str
) -> str:
    """The plan as the text ``--plan`` prints: one row per step, then the steps that would not fit."""
    lines = [
        f"tcompress report plan: {shape.family}, {shape.num_blocks} blocks, d {shape.hidden}, MLP {shape.mlp}, "
        f"vocab {shape.vocab}, {shape.params / 1e9:.2f}B parameters; {dtype} on {device} ({device_note}); "
        f"budget {budget.name}: {budget.eval_tokens or 'all'} evaluation tokens, {budget.calib_windows} x "
        f"{budget.calib_length} calibration tokens",
        "",
        f"{'step':<13} {'device GiB':>10} {'host GiB':>9} {'fwd Mtok':>8} {'bwd Mtok':>8} {'evals':>5}  fits",
    ]
    for p in plans:
        device_gib = "-" if device == "cpu" else f"{p.device_bytes / GIB:.1f}"
        host = p.host_bytes + (p.device_bytes if device == "cpu" else 0) + PROCESS_BYTES
        lines.append(
            f"{p.step:<13} {device_gib:>10} {host / GIB:>9.1f} {p.forward_tokens / 1e6:>8.2f} "
            f"{p.backward_tokens / 1e6:>8.2f} "
            f"{p.evaluations:>5}  {'yes' if p.fits else 'NO'}"
        )
    lines.append("")
    lines.append(
        f"fwd/bwd Mtok: millions of tokens through the whole model besides the evaluations; evals: perplexity runs "
        f"over {eval_tokens_label(budget)} evaluation tokens each. "
        "Host includes the process (~0.5 GiB)"
        + ("; on a CPU the model lives in host memory." if device == "cpu" else ".")
    )
    for p in plans:
        if not p.fits:
            lines.append(f"{p.step} would not fit: {p.why}")
        top = sorted(p.terms.items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"  {p.step}: " + ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in top))
    return "\n".join(lines)


def eval_tokens_label(budget: Budget) -> str:
    return f"{budget.eval_tokens:,}" if budget.eval_tokens else f"~{FULL_TEXT_TOKENS:,} (the whole text)"


def plan_to_dict(plans: list[StepPlan]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(p) for p in plans]


def gib(value: float) -> int:
    """GiB -> bytes (for the CLI's memory flags)."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"plan: memory must be a positive number of GiB; got {value!r}")
    return int(value * GIB)


def model_shape(name_or_path: str) -> ModelShape:
    """The shape of a model from its configuration alone: a named model, a .gguf file, a folder holding (at least)
    ``config.json``, or a hub id where a hub is reachable. No weights are read.

    Raises:
        FileNotFoundError: as :func:`tcompress.models.resolve_model`; ValueError: an unsupported model type.
    """
    from transformers import AutoConfig

    from ..models.load import resolve_model

    source = resolve_model(name_or_path)
    extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    return ModelShape.from_config(AutoConfig.from_pretrained(source.path, **extra))


def plan_report(
    model: str,
    budget: Budget,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    device_memory: int | None = None,
    host_memory: int | None = None,
) -> tuple[str, list[StepPlan]]:
    """(the text ``--plan`` prints, the plans) for ``model`` under ``budget``: memory from this machine (or the
    values given), the model's shape from its configuration."""
    shape = model_shape(model)
    if device_memory is None:
        device_memory, note = device_memory_bytes(device)
    else:
        note = f"{device_memory / GIB:.0f} GiB as given"
    if host_memory is None:
        host_memory = host_memory_bytes()
    plans = plan_steps(shape, budget, dtype=dtype, device=device, device_memory=device_memory, host_memory=host_memory)
    text = render_plan(plans, shape, budget, dtype=dtype, device=device, device_note=note)
    if host_memory is not None:
        text += f"\nhost memory: {host_memory / GIB:.0f} GiB"
    return text, plans
