"""``save_compressed(model, dir)`` / ``load_compressed(dir)``: a compressed model as safetensors + JSON.

A saved directory holds ``config.json`` (the transformers config), ``model.safetensors`` (every parameter and
buffer, packed weights included, tied tensors stored once) and ``tcompress.json``: the recipe that produced the
model, the replaced modules with what is needed to rebuild them empty, versions, and the size and SHA-256 of the
weights file. Loading rebuilds the architecture from the config, swaps in the recorded modules, checks the file
against its checksum and every tensor's shape against its module's config, then loads — so a reload gives
bit-identical outputs, and a truncated, tampered or mismatched file is a clear error rather than garbage.

Saving writes into a temporary sibling directory and renames it into place at the end, so a failed save leaves
no half-written directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .. import __version__, models
from .._files import COMPRESSED_MANIFEST, atomic_directory
from ..nn import HadamardLinear, LowRankLinear, QuantLinear, QuantSpec, ScaleFreeRMSNorm
from .manifest import FORMAT, FORMAT_VERSION, WEIGHTS, validate_manifest

MANIFEST = COMPRESSED_MANIFEST
# The element-type names safetensors reports for the dtypes a replaced module stores.
_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.uint8: "U8",
}


def _module_record(module: torch.nn.Module) -> dict | None:
    if isinstance(module, QuantLinear):
        return {
            "type": "QuantLinear",
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
            "bias_dtype": str(module.bias.dtype).replace("torch.", "") if module.bias is not None else None,
            "spec": module.spec.to_dict(),
            "online_hadamard": module.online_hadamard,
            "act_bits": module.act_bits,
            "act_granularity": module.act_granularity,
        }
    if isinstance(module, ScaleFreeRMSNorm):
        return {"type": "ScaleFreeRMSNorm", "dim": module.dim, "eps": module.eps}
    if isinstance(module, nn.Linear):
        # A HadamardLinear, or a head that a rotation gave a bias (GPT-2's final LayerNorm bias, fused).
        return {
            "type": type(module).__name__,
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
            "dtype": str(module.weight.dtype).replace("torch.", ""),
        }
    if isinstance(module, LowRankLinear):
        return _low_rank_record(module)
    return None


def _records(model: torch.nn.Module, arch) -> dict:
    """{name: record} of every module a config-built model would not have as it is here."""
    head = arch.head(model)
    records = {}
    for name, module in model.named_modules():
        if type(module) is nn.Linear and not (module is head and module.bias is not None):
            continue  # a plain linear layer the config builds itself
        record = _module_record(module)
        if record is not None:
            records[name] = record
    return records


def _torch_dtype(name) -> torch.dtype:
    dtype = getattr(torch, name or "float32", None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {name!r} is not a torch dtype")
    return dtype


def _build_module(name: str, record: dict) -> torch.nn.Module:
    kind = record.get("type")
    if kind == "QuantLinear":
        try:
            spec = QuantSpec.from_dict(record["spec"])
            bias_dtype = getattr(torch, record.get("bias_dtype") or "float32")
            if not isinstance(bias_dtype, torch.dtype):
                raise ValueError(f"bias_dtype {record.get('bias_dtype')!r} is not a torch dtype")
            return QuantLinear(
                record["in_features"],
                record["out_features"],
                spec,
                record["bias"],
                bias_dtype,
                online_hadamard=bool(record.get("online_hadamard", False)),
                act_bits=record.get("act_bits"),
                act_granularity=record.get("act_granularity", "per_token"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{MANIFEST}: the record of module {name!r} is invalid: {exc}") from None
    linear_types = {"Linear": nn.Linear, "HadamardLinear": HadamardLinear}
    if kind == "LowRankLinear":
        return _build_low_rank(name, record)
    try:
        if kind == "ScaleFreeRMSNorm":
            return ScaleFreeRMSNorm(record["dim"], record["eps"])
        if kind in linear_types:
            dtype = _torch_dtype(record.get("dtype"))
            return linear_types[kind](record["in_features"], record["out_features"], bias=record["bias"], dtype=dtype)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{MANIFEST}: the record of module {name!r} is invalid: {exc}") from None
    raise ValueError(
        f"{MANIFEST}: module {name!r} has unknown type {kind!r} "
        "(expected QuantLinear, LowRankLinear, HadamardLinear, Linear or ScaleFreeRMSNorm)"
    )


# -- LowRankLinear (tcompress.recipes.factorize): two factors, each a bias-free nn.Linear or a QuantLinear -----------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _low_rank_record(module: LowRankLinear) -> dict:
    factors = {}
    for label in ("in_proj", "out_proj"):
        factor = getattr(module, label)
        if isinstance(factor, QuantLinear):
            factors[label] = _module_record(factor)
        else:
            factors[label] = {
                "type": "Linear",
                "in_features": factor.in_features,
                "out_features": factor.out_features,
                "dtype": _dtype_name(factor.weight.dtype),
            }
    return {
        "type": "LowRankLinear",
        "in_features": module.in_features,
        "out_features": module.out_features,
        "rank": module.rank,
        "bias": module.bias is not None,
        "bias_dtype": _dtype_name(module.bias.dtype) if module.bias is not None else None,
        "factors": factors,
    }


def _build_low_rank(name: str, record: dict) -> LowRankLinear:
    try:
        factors = {}
        for label in ("in_proj", "out_proj"):
            sub = record["factors"][label]
            if sub.get("type") == "Linear":
                dtype = getattr(torch, sub["dtype"])
                if not isinstance(dtype, torch.dtype):
                    raise ValueError(f"{label} dtype {sub['dtype']!r} is not a torch dtype")
                factors[label] = torch.nn.Linear(sub["in_features"], sub["out_features"], bias=False, dtype=dtype)
            elif sub.get("type") == "QuantLinear":
                factors[label] = _build_module(f"{name}.{label}", sub)
            else:
                raise ValueError(f"{label} has type {sub.get('type')!r} (expected Linear or QuantLinear)")
        bias = None
        if record["bias"]:
            bias_dtype = getattr(torch, record.get("bias_dtype") or "float32")
            if not isinstance(bias_dtype, torch.dtype):
                raise ValueError(f"bias_dtype {record.get('bias_dtype')!r} is not a torch dtype")
            bias = torch.zeros(record["out_features"], dtype=bias_dtype)
        module = LowRankLinear(factors["in_proj"], factors["out_proj"], bias)
        if (module.in_features, module.out_features, module.rank) != (
            record["in_features"],
            record["out_features"],
            record["rank"],
        ):
            raise ValueError(
                f"its factors give {module.out_features} x {module.in_features} at rank {module.rank}, but it records "
                f"{record['out_features']} x {record['in_features']} at rank {record['rank']}"
            )
        return module
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{MANIFEST}: the record of module {name!r} is invalid: {exc}") from None


def _check_low_rank_shapes(model: torch.nn.Module, records: dict, weights: Path, stored: dict) -> None:
    """The plain (nn.Linear) factors' weights of every LowRankLinear against the file, with clear errors."""
    for name, record in records.items():
        if record.get("type") != "LowRankLinear":
            continue
        module = model.get_submodule(name)
        for label in ("in_proj", "out_proj"):
            factor = getattr(module, label)
            if isinstance(factor, QuantLinear):
                continue  # its buffers are checked as a module of its own
            key = f"{name}.{label}.weight"
            if key not in stored:
                raise ValueError(f"load_compressed: {weights} has no tensor {key!r}, which module {name!r} needs")
            if stored[key] != tuple(factor.weight.shape):
                raise ValueError(
                    f"load_compressed: {key} has shape {stored[key]} in {weights}, but module {name!r} as recorded "
                    f"in {MANIFEST} (rank {module.rank}) needs {tuple(factor.weight.shape)}"
                )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_compressed(model: torch.nn.Module, directory, *, tokenizer=None, overwrite: bool = False) -> Path:
    """Writes ``model`` (compressed or not) to ``directory``; returns its path.

    Args:
        model: a model of a family :mod:`tcompress.models` knows, usually after :func:`compress_`.
        directory: the folder to create.
        tokenizer: also saved into the folder when given (so :func:`tcompress.load` finds it).
        overwrite: replace an existing non-empty folder (only once the new one is complete).

    Raises:
        FileExistsError: ``directory`` exists, is not empty, and ``overwrite`` is False.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())) and not overwrite:
        raise FileExistsError(f"save_compressed: {directory} already exists and is not empty (pass overwrite=True)")
    arch = models.architecture(model)
    with atomic_directory(directory) as tmp:
        model.config.save_pretrained(tmp)
        records = _records(model, arch)
        save_model(model, str(tmp / WEIGHTS), metadata={"format": "pt", "producer": f"tcompress {__version__}"})
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()})
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tcompress_version": __version__,
            "torch_version": torch.__version__,
            "architecture": arch.family,
            "model_class": type(model).__name__,
            "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "recipe": list(getattr(model, "tcompress_config", [])),
            "modules": records,
            "files": {WEIGHTS: {"bytes": (tmp / WEIGHTS).stat().st_size, "sha256": _sha256(tmp / WEIGHTS)}},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return directory


def read_manifest(directory) -> dict:
    """The parsed ``tcompress.json`` of a saved folder, checked against its schema (:mod:`.manifest`).

    Raises:
        FileNotFoundError: the folder has no manifest.
        ValueError: the manifest is not UTF-8 JSON, or a field has the wrong type or range (the message names it).
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a tcompress compressed model: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({exc}); the saved model is corrupted") from None
    return validate_manifest(manifest, path)


def _verify_file(directory: Path, name: str, expected: dict) -> Path:
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"load_compressed: {path} is missing")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise ValueError(
            f"load_compressed: {path} is {size} bytes but was saved as {expected['bytes']} bytes "
            f"({'truncated' if size < expected['bytes'] else 'altered'})"
        )
    if _sha256(path) != expected["sha256"]:
        raise ValueError(
            f"load_compressed: {path} does not match the SHA-256 recorded when it was saved: the file was modified "
            "or corrupted"
        )
    return path


def _no_init():
    """A context that skips weight initialisation (the checkpoint overwrites every weight anyway)."""
    for where in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            module = __import__(where, fromlist=["no_init_weights"])
            return module.no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def _stored_tensors(weights: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """({name: shape}, {name: safetensors dtype}) from the file's header, without reading any tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: tuple(v.get_shape()) for k, v in slices.items()}, {k: v.get_dtype() for k, v in slices.items()}
    except SafetensorError as exc:
        raise ValueError(f"load_compressed: {weights} is not a readable safetensors file ({exc})") from None


def _main_tensor(record: dict) -> tuple[str, tuple[int, int]] | None:
    """(tensor suffix, shape) of the one large tensor a module record implies, or None (a norm has none)."""
    kind = record["type"]
    if kind == "QuantLinear":
        packed = record["in_features"] // 2 if record["spec"].get("bits", 4) == 4 else record["in_features"]
        return "qweight", (record["out_features"], packed)
    if kind in ("Linear", "HadamardLinear"):
        return "weight", (record["out_features"], record["in_features"])
    return None


def _check_record_sizes(records: dict, stored: dict, weights: Path) -> None:
    """Every recorded module size against the file's header, before any module is built: a size edited in the
    manifest is an error here, not an attempt to allocate it."""
    for name, record in records.items():
        parts = [(name, record)]
        if record["type"] == "LowRankLinear":
            parts = [(f"{name}.{label}", record["factors"][label]) for label in ("in_proj", "out_proj")]
        for prefix, part in parts:
            implied = _main_tensor(part)
            if implied is None:
                continue
            key, shape = f"{prefix}.{implied[0]}", implied[1]
            # A weight may be absent when it is tied to another stored tensor; a packed buffer never is.
            if key in stored and stored[key] != shape or key not in stored and implied[0] == "qweight":
                raise ValueError(
                    f"load_compressed: module {name!r} as recorded in {MANIFEST} implies {key} of shape {shape}, but "
                    f"{weights} holds {stored.get(key, 'no such tensor')}"
                )


def _check_shapes(model: torch.nn.Module, records: dict, weights: Path, stored: dict, stored_dtypes: dict) -> None:
    for name in records:
        module = model.get_submodule(name)
        for buf_name, buf in module.named_buffers(recurse=False):
            key = f"{name}.{buf_name}"
            if key not in stored:
                raise ValueError(f"load_compressed: {weights} has no tensor {key!r}, which module {name!r} needs")
            want = _SAFETENSORS_DTYPES.get(buf.dtype)
            if want is not None and stored_dtypes[key] != want:
                raise ValueError(
                    f"load_compressed: {key} is {stored_dtypes[key]} in {weights}, but module {name!r} as recorded in "
                    f"{MANIFEST} ({module.extra_repr()}) needs {want}"
                )
            if stored[key] != tuple(buf.shape):
                raise ValueError(
                    f"load_compressed: {key} has shape {stored[key]} in {weights}, but module {name!r} as recorded "
                    f"in {MANIFEST} ({module.extra_repr()}) needs {tuple(buf.shape)}"
                )


def load_compressed(directory, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuilds a model written by :func:`save_compressed`, bit-identical to the one saved.

    Raises:
        FileNotFoundError: not a saved tcompress model, or a file is missing.
        ValueError: a truncated or modified weights file, a malformed manifest, or tensors whose shapes do not
            match the recorded modules.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    manifest = read_manifest(directory)
    weights = _verify_file(directory, WEIGHTS, manifest["files"][WEIGHTS])
    config = AutoConfig.from_pretrained(directory)
    dtype = manifest.get("dtype")
    # Built in the saved dtype (not cast afterwards, which would also round the fp32 rotary tables).
    kwargs = models.pretrained_dtype_kwargs(getattr(torch, dtype)) if isinstance(dtype, str) else {}
    with _no_init():
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # skipped along with the initialisation by some transformers versions
    models.architecture(model)  # a clear error for a family the table does not know
    records = manifest.get("modules", {})
    stored, stored_dtypes = _stored_tensors(weights)
    _check_record_sizes(records, stored, weights)
    for name, record in records.items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{MANIFEST}: module {name!r} does not exist in a {type(model).__name__}") from None
        models.set_module(model, name, _build_module(name, record))
    _check_shapes(model, records, weights, stored, stored_dtypes)
    _check_low_rank_shapes(model, records, weights, stored)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except SafetensorError as exc:
        raise ValueError(f"load_compressed: {weights} could not be read ({exc})") from None
    # Tied tensors are stored once (under one of their names): a missing name is fine when its tensor is the same
    # object as one that was loaded.
    state = model.state_dict(keep_vars=True)
    loaded = {id(state[k]) for k in state if k not in set(missing)}
    missing = [k for k in missing if id(state[k]) not in loaded]
    if missing or unexpected:
        raise ValueError(
            f"load_compressed: {weights} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tcompress_config = list(manifest.get("recipe", []))
    return model.to(device).eval()
