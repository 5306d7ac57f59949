"""What both exporters share: which compressed models a serving format can express, the model's tensors under the
names its transformers class uses, and writing an output so that a failure leaves nothing half-written.

A serving engine runs the architecture named in the config (``LlamaForCausalLM`` ...), so an export is only faithful
when every tensor of the compressed model has a place in that architecture and every module computes what the
engine's module computes. tcompress modules that only tcompress can run (an online Hadamard, low-rank factors, a
substituted block) are refused; the parameter-free norms of a rotated model are the engine's RMSNorm with weight = 1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .. import models
from .._files import atomic_directory, atomic_file  # noqa: F401 - re-exported for the exporters
from ..nn import HadamardLinear, QuantLinear, ScaleFreeRMSNorm

# tcompress modules an export can write: QuantLinear (as the format's quantized linear, or dequantized) and
# ScaleFreeRMSNorm (as an RMSNorm with weight = 1). Every other module from tcompress.nn has no engine counterpart.
_EXPORTABLE = (QuantLinear, ScaleFreeRMSNorm)


def check_exportable(model: nn.Module, fmt: str) -> models.ArchSpec:
    """The model's :class:`~tcompress.models.ArchSpec`, after refusing what ``fmt`` cannot express.

    Raises:
        ValueError: an architecture tcompress does not know; an online Hadamard transform (a ``HadamardLinear`` or a
            ``QuantLinear(online_hadamard=True)``); any other tcompress module (low-rank factors, a substituted block
            ...); a LayerNorm model whose norms a rotation turned into RMSNorms. Each message names the module and
            what the format expects.
    """
    try:
        arch = models.architecture(model)
    except ValueError as exc:
        raise ValueError(f"{fmt} export: {exc}") from None
    for name, module in model.named_modules():
        if isinstance(module, HadamardLinear) or (isinstance(module, QuantLinear) and module.online_hadamard):
            raise ValueError(
                f"{fmt} export: {name!r} transforms its input with an online Hadamard at run time "
                f"({type(module).__name__}), which serving engines do not run; expected plain linear layers. "
                "Rotate with RotateConfig(online_hadamard=False) (the residual rotation is fused into the weights)"
            )
        if type(module).__module__.startswith("tcompress.") and not isinstance(module, _EXPORTABLE):
            raise ValueError(
                f"{fmt} export: {name!r} is a tcompress {type(module).__name__}, which has no counterpart in "
                f"{type(model).__name__}; expected only QuantLinear projections and (after a rotation) "
                "ScaleFreeRMSNorm norms"
            )
    rotated = [name for name, norm, _ in arch.iter_norms(model) if isinstance(norm, ScaleFreeRMSNorm)]
    if rotated and arch.norm_type == "layernorm":
        raise ValueError(
            f"{fmt} export: this {arch.family} model was rotated, which turned its LayerNorms into RMSNorms "
            f"(e.g. {rotated[0]!r} is a ScaleFreeRMSNorm); {type(model).__name__} has LayerNorms only, so the rotated "
            "model has no faithful form in its architecture. Export the model before rotating it"
        )
    return arch


def rms_norm_eps(model: nn.Module, arch: models.ArchSpec, fmt: str) -> float:
    """The one eps every norm of an RMSNorm model uses, checked against ``config.rms_norm_eps``.

    Raises:
        ValueError: a norm whose eps differs from the config's (the exported config holds one eps for all).
    """
    expected = float(model.config.rms_norm_eps)
    for name, norm, _ in arch.iter_norms(model):
        eps = models.norm_parameters(norm)[2]
        if eps != expected:
            raise ValueError(
                f"{fmt} export: norm {name!r} uses eps {eps!r} but the config's rms_norm_eps is {expected!r}; "
                "the exported config holds one eps for every norm"
            )
    return expected


def head_is_tied(model: nn.Module, arch: models.ArchSpec) -> bool:
    """Whether the head shares the embedding's weight (a quantized head has a weight of its own, packed)."""
    return isinstance(getattr(arch.head(model), "weight", None), torch.Tensor) and arch.is_tied(model)


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the token embedding: the dtype the exported model is declared in."""
    return models.architecture(model).embeddings(model).weight.dtype


class ExportTensor(NamedTuple):
    """One tensor of the exported model: its state-dict ``name``, its ``shape``, the QuantLinear that owns it (None for
    a plain tensor) and ``load()``, which returns it detached, on the CPU (a QuantLinear weight dequantized to fp32:
    called one tensor at a time, so a large quantized model is never dequantized whole)."""

    name: str
    shape: tuple[int, ...]
    owner: QuantLinear | None
    load: Callable[[], torch.Tensor]


def export_tensors(model: nn.Module, arch: models.ArchSpec) -> list[ExportTensor]:
    """Every tensor the model's architecture stores, as :class:`ExportTensor`.

    A QuantLinear's packed buffers are not listed; its ``name.weight`` is (its owner tells the caller to write it in
    the format's quantized form or dequantized), then its ``name.bias`` when it has one. A ScaleFreeRMSNorm gives
    ``name.weight`` = ones (the RMSNorm that computes the same). A tied head gives nothing: the embedding holds it.
    """
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    tied = head_is_tied(model, arch)
    out = []
    for key, tensor in model.state_dict().items():
        owner = key.rpartition(".")[0]
        if owner in quantized or (tied and owner == arch.head_path):
            continue
        out.append(ExportTensor(key, tuple(tensor.shape), None, lambda t=tensor: t.detach().cpu()))
    for name, module in quantized.items():
        shape = (module.out_features, module.in_features)
        out.append(
            ExportTensor(f"{name}.weight", shape, module, lambda m=module: m.dequantized_weight().detach().cpu())
        )
        if module.bias is not None:
            bias = module.bias
            out.append(ExportTensor(f"{name}.bias", tuple(bias.shape), module, lambda b=bias: b.detach().cpu()))
    dtype = float_dtype(model)
    for name, module in model.named_modules():
        if isinstance(module, ScaleFreeRMSNorm):
            load = lambda n=module.dim: torch.ones(n, dtype=dtype)  # noqa: E731
            out.append(ExportTensor(f"{name}.weight", (module.dim,), None, load))
    return out


def export_config(model: nn.Module, arch: models.ArchSpec):
    """A copy of ``model.config`` for the exported checkpoint: the model's class in ``architectures`` (engines pick
    the class from it), its dtype, and ``tie_word_embeddings`` as the tensors are (a rotation or a quantized head
    unties them)."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.tie_word_embeddings = head_is_tied(model, arch)
    config.dtype = float_dtype(model)
    return config


def check_tensors_fit(model: nn.Module, config, shapes: dict[str, tuple[int, ...]], fmt: str) -> None:
    """Checks that ``shapes`` (state-dict name -> (out, in) or dense shape) are exactly the tensors of the model's
    transformers class built from ``config``, which is what the engine will load them into.

    Built on the meta device, so nothing is allocated.

    Raises:
        ValueError: a tensor with no place in the class (e.g. a bias a rotation added to a bias-free head), a tensor
            the class needs that the model lacks, or a shape that differs.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if config.tie_word_embeddings:
        head = models.architecture(skeleton).head_path
        expected.pop(f"{head}.weight", None)
    cls = type(skeleton).__name__
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise ValueError(
            f"{fmt} export: the model holds tensor {extra[0]!r} {tuple(shapes[extra[0]])}, which a {cls} built from "
            f"its config has no place for ({len(extra)} such tensor(s)); was a recipe applied that changed the "
            "architecture?"
        )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"{fmt} export: a {cls} needs tensor {missing[0]!r}, which the model does not have")
    for key, shape in shapes.items():
        if tuple(shape) != expected[key]:
            raise ValueError(
                f"{fmt} export: {key!r} has shape {tuple(shape)} but a {cls} built from the config expects "
                f"{expected[key]}"
            )


def check_target(target: Path, overwrite: bool, fmt: str, *, directory: bool) -> None:
    """Raises FileExistsError when ``target`` exists (a non-empty folder, or a file) and ``overwrite`` is False, and
    a clear error when it is a file where a folder is expected or the reverse."""
    if not target.exists():
        return
    if directory and not target.is_dir():
        raise FileExistsError(f"{fmt} export: {target} exists and is a file; expected a folder path")
    if not directory and target.is_dir():
        raise IsADirectoryError(f"{fmt} export: {target} is a folder; expected a file path")
    if not overwrite and (not directory or any(target.iterdir())):
        raise FileExistsError(f"{fmt} export: {target} already exists (pass overwrite=True to replace it)")
