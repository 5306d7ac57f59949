"""``export_compressed_tensors(model, dir)``: a tcompress-quantized model as a Hugging Face checkpoint in the
compressed-tensors format, which transformers (with the ``compressed-tensors`` package) and vLLM load.

The formats (the weights are the ones tcompress computes with, bit for bit; only their packing changes):

- Weight-only int4 and int8: ``"pack-quantized"``. tcompress stores unsigned codes ``u`` that dequantize to
  ``(u - z) * s``; compressed-tensors stores signed codes ``q = u - 2^(b-1)`` and zero points ``zp = z - 2^(b-1)``
  and computes ``(q - zp) * s``, the same numbers. ``weight_packed`` (out, ceil(in * b / 32)) int32 holds 32 / b
  codes per word, column ``k`` of a word in bits ``b*k .. b*k + b - 1`` (stored with the ``2^(b-1)`` offset, i.e.
  tcompress's unsigned code); ``weight_scale`` (out, groups) in the scales' dtype; ``weight_shape`` = [out, in];
  asymmetric layers add ``weight_zero_point`` (ceil(out * b / 32), groups) int32, packed the same way along the
  output dimension. Strategy ``"group"`` with ``group_size``, or ``"channel"`` for per-channel scales.
  vLLM serves this as its WNA16 scheme (int8 weights too: that scheme reads only the packed format).
- W8A8 (``act_bits=8`` on int8 symmetric per-channel weights): ``"int-quantized"``. ``weight`` (out, in) int8 = q,
  ``weight_scale`` (out, 1), and input activations declared int8, symmetric, per token, dynamic: vLLM's int8
  kernels compute the per-token scale as ``max|x| / 127`` and round, which is what tcompress computes.
  (transformers' compressed-tensors reference forward picks its activation scale as ``max|x| / 127.5`` instead,
  so its logits differ from tcompress's by the activation rounding; the weights are identical.)

Embeddings, norms and unquantized projections are written as they are (``ignore``d by the quantization config); the
parameter-free norms of a rotated model are written as RMSNorm weights of ones, and an untied head as its own
tensor with ``tie_word_embeddings: false``. Everything that the architecture cannot run (an online Hadamard, low-rank
factors, a substituted block, a rotated LayerNorm model, GPT-2's Conv1D projections) is refused with the reason.

Loading: ``AutoModelForCausalLM.from_pretrained(dir)`` with ``compressed-tensors`` installed. With transformers 5.23
and compressed-tensors 0.20, *asymmetric* pack-quantized checkpoints (ours, and any other) load only with
``quantization_config=CompressedTensorsConfig(dequantize=True)``: the compressed load path builds the zero points
unpacked and rejects the packed ones the format stores.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from .. import __version__, models, ops
from ..nn import QuantLinear
from . import _common

FORMAT = "compressed-tensors"
WEIGHTS = "model.safetensors"
PACKED = "pack-quantized"
INT = "int-quantized"
# Projections vLLM fuses into one layer (q|k|v, gate|up): each group must share one scheme or stay unquantized.
_FUSED_ROLES = (("q", "k", "v"), ("gate", "up"))
_WORD_BITS = 32


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """codes (rows, n) unsigned in [0, 2^bits) -> (rows, ceil(n * bits / 32)) int32: the compressed-tensors packing.

    Word ``j`` of a row holds columns ``j * 32 / bits ...`` with column ``k`` of the word in bits ``bits * k`` up;
    the row is zero-padded to whole words.
    """
    per_word = _WORD_BITS // bits
    rows, n = codes.shape
    padded = torch.nn.functional.pad(codes.to(torch.int64), (0, (-n) % per_word))
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    words = (padded.reshape(rows, -1, per_word) << shifts).sum(-1)
    # Two's complement of the 32-bit pattern, spelled out: an int64 -> int32 cast of values >= 2^31 is not defined.
    words = torch.where(words >= 1 << (_WORD_BITS - 1), words - (1 << _WORD_BITS), words)
    return words.to(torch.int32).reshape(rows, math.ceil(n * bits / _WORD_BITS))


def _scheme(module: QuantLinear) -> tuple:
    spec = module.spec
    return (spec.bits, spec.group_size, spec.symmetric, module.act_bits)


def _format(scheme: tuple) -> str:
    return INT if scheme[3] is not None else PACKED


def _check_layer(name: str, module: QuantLinear, dtype: torch.dtype) -> None:
    bits, group_size, symmetric, act_bits = _scheme(module)
    if act_bits is not None and (act_bits, bits, group_size, symmetric) != (8, 8, None, True):
        given = f"act_bits={act_bits} with int{bits} {'per-channel' if group_size is None else f'group {group_size}'} "
        given += "symmetric" if symmetric else "asymmetric"
        raise ValueError(
            f"{FORMAT} export: {name!r} quantizes its activations ({given} weights); the int8 activation kernels of "
            "serving engines take only W8A8: act_bits=8 on int8 symmetric per-channel weights "
            "(QuantizeConfig(bits=8, group_size=None, symmetric=True, act_bits=8)), or act_bits=None"
        )
    scales = module.scales
    if not torch.equal(scales.to(dtype).to(scales.dtype), scales):
        raise ValueError(
            f"{FORMAT} export: the {scales.dtype} scales of {name!r} are not exact in the model's {dtype}, which "
            f"engines load scales in; quantize with scale_dtype={str(dtype).replace('torch.', '')!r} or export the "
            f"model in {scales.dtype}"
        )


def _layer_tensors(name: str, module: QuantLinear) -> dict[str, torch.Tensor]:
    """The compressed-tensors entries of one QuantLinear (see the module docstring)."""
    bits, group_size, symmetric, act_bits = _scheme(module)
    codes = (ops.unpack_int4(module.qweight) if bits == 4 else module.qweight).cpu()
    out = {f"{name}.weight_scale": module.scales.detach().cpu().contiguous()}
    if act_bits is not None:
        offset = 1 << (bits - 1)
        out[f"{name}.weight"] = (codes.to(torch.int16) - offset).to(torch.int8)
    else:
        out[f"{name}.weight_packed"] = pack_codes(codes, bits)
        out[f"{name}.weight_shape"] = torch.tensor([module.out_features, module.in_features], dtype=torch.int64)
        if not symmetric:
            out[f"{name}.weight_zero_point"] = pack_codes(module.zeros.cpu().T, bits).T.contiguous()
    return out


def _quantization_args(scheme: tuple) -> tuple[dict, dict | None]:
    bits, group_size, symmetric, act_bits = scheme
    weights = {
        "num_bits": bits,
        "type": "int",
        "symmetric": symmetric,
        "strategy": "channel" if group_size is None else "group",
        "group_size": group_size,
        "dynamic": False,
    }
    if act_bits is None:
        return weights, None
    inputs = {"num_bits": act_bits, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
    return weights, inputs


def _check_fused(model: nn.Module, arch: models.ArchSpec, schemes: dict[str, tuple]) -> None:
    paths = dict(arch.projection_paths)
    for i in range(len(arch.blocks(model))):
        for roles in _FUSED_ROLES:
            if not all(role in paths for role in roles):
                continue
            names = [f"{arch.blocks_path}.{i}.{paths[role]}" for role in roles]
            found = {schemes.get(n) for n in names}
            if len(found) > 1:
                described = ", ".join(f"{n}: {_describe(schemes.get(n))}" for n in names)
                raise ValueError(
                    f"{FORMAT} export: {described}. vLLM fuses {'/'.join(roles)} into one layer, which takes one "
                    "scheme; quantize them alike (or leave all of them in floating point)"
                )


def _describe(scheme: tuple | None) -> str:
    if scheme is None:
        return "floating point"
    bits, group_size, symmetric, act_bits = scheme
    g = "per-channel" if group_size is None else f"group {group_size}"
    a = "" if act_bits is None else f", act_bits={act_bits}"
    return f"int{bits} {g} {'symmetric' if symmetric else 'asymmetric'}{a}"


def _quantization_config(model: nn.Module, schemes: dict[str, tuple]) -> dict:
    by_scheme: dict[tuple, list[str]] = {}
    for name, scheme in schemes.items():
        by_scheme.setdefault(scheme, []).append(name)
    groups = {}
    for i, (scheme, names) in enumerate(by_scheme.items()):
        weights, inputs = _quantization_args(scheme)
        # One scheme: the usual class target with the float layers ignored. Several: each group names its layers.
        targets = ["Linear"] if len(by_scheme) == 1 else ["re:^(?:" + "|".join(re.escape(n) for n in names) + ")$"]
        groups[f"group_{i}"] = {
            "targets": targets,
            "weights": weights,
            "input_activations": inputs,
            "output_activations": None,
            "format": _format(scheme),
        }
    formats = {_format(s) for s in by_scheme}
    ignore = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in schemes]
    return {
        "quant_method": FORMAT,
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


def export_compressed_tensors(model: nn.Module, directory, *, tokenizer=None, overwrite: bool = False) -> Path:
    """Writes a tcompress-quantized model as a compressed-tensors checkpoint folder; returns its path.

    The folder holds ``config.json`` (the model's config with ``quantization_config``), ``model.safetensors`` and,
    when given, the tokenizer's files. It is written into a temporary sibling and renamed into place, so a failure
    leaves nothing behind.

    Args:
        model: a Llama-family (llama, mistral, qwen2) causal LM after ``compress_(model, [RotateConfig(...),]
            QuantizeConfig(...))``.
        directory: the folder to create.
        tokenizer: saved into the folder when given (``tokenizer.save_pretrained``).
        overwrite: replace an existing non-empty folder (only once the new one is complete).

    Raises:
        ValueError: a model with no quantized projection (nothing for this format to describe: use
            ``model.save_pretrained``); GPT-2 (its projections are Conv1D, which compressed-tensors does not
            quantize); activation quantization other than W8A8 per-channel; q/k/v or gate/up quantized differently;
            scales not exact in the model's dtype; and everything :func:`tcompress.export._common.check_exportable`
            refuses. Each message names the layer and what was expected.
        FileExistsError: ``directory`` exists, is not empty, and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    arch = _common.check_exportable(model, FORMAT)
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not quantized:
        raise ValueError(
            f"{FORMAT} export: the model has no QuantLinear (expected a model after compress_(model, "
            "QuantizeConfig(...))); an unquantized model needs no quantization config: use model.save_pretrained"
        )
    if arch.transposed_weights:
        raise ValueError(
            f"{FORMAT} export: {type(model).__name__}'s projections are transformers Conv1D layers, and "
            f"compressed-tensors quantizes nn.Linear layers only; supported families: llama, mistral, qwen2"
        )
    if arch.norm_type == "rmsnorm":
        _common.rms_norm_eps(model, arch, FORMAT)
    dtype = _common.float_dtype(model)
    for name, module in quantized.items():
        _check_layer(name, module, dtype)
    schemes = {name: _scheme(m) for name, m in quantized.items()}
    _check_fused(model, arch, schemes)
    config = _common.export_config(model, arch)

    entries = _common.export_tensors(model, arch)
    _common.check_tensors_fit(model, config, {e.name: e.shape for e in entries}, FORMAT)
    # Plain tensors as they are; a QuantLinear's bias too (compressed-tensors keeps biases dense).
    tensors = {e.name: e.load().contiguous() for e in entries if e.owner is None or e.name.endswith(".bias")}
    for name, module in quantized.items():
        tensors.update(_layer_tensors(name, module))

    _common.check_target(directory, overwrite, FORMAT, directory=True)
    recipe = json.dumps(list(getattr(model, "tcompress_config", [])))
    with _common.atomic_directory(directory) as tmp:
        config.save_pretrained(tmp)
        written = json.loads((tmp / "config.json").read_text())
        written["quantization_config"] = _quantization_config(model, schemes)
        (tmp / "config.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
        metadata = {"format": "pt", "producer": f"tcompress {__version__}", "tcompress_recipe": recipe}
        save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return directory
