"""The schema of ``tcompress.json``, a compressed folder's manifest: every field's type and range, checked in one place
before anything is built or allocated, so an edited or corrupted manifest is a ``ValueError`` naming the field.

Top level::

    format           "tcompress-compressed"
    format_version   int, 1 .. FORMAT_VERSION
    dtype            a float dtype name ("float32", "float16", "bfloat16", "float64"), a list of them, or null
    recipe           list of recipe configs ({"kind": ..., "version": ..., fields}), each rebuilt by its class
    modules          {module name: record} for every module a config-built model would not have as it is
    files            {"model.safetensors": {"bytes": int >= 0, "sha256": 64 hex digits}}

Module records (``type``): ``QuantLinear`` (in_features, out_features, bias, bias_dtype, spec {bits, group_size,
symmetric, scale_dtype}, online_hadamard, act_bits, act_granularity (optional, "per_token" when absent)), ``Linear`` /
``HadamardLinear`` (in_features, out_features, bias, dtype), ``ScaleFreeRMSNorm`` (dim, eps), ``LowRankLinear``
(in_features, out_features, rank, bias, bias_dtype, factors {in_proj, out_proj}: each a ``Linear`` (in_features,
out_features, dtype) or a ``QuantLinear`` record).
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

from ..nn import QuantSpec
from ..nn.quant_linear import ACT_BITS, ACT_GRANULARITIES
from .config import config_from_dict

FORMAT = "tcompress-compressed"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# Features of one layer: far above any real model (Llama-3-405B's MLP is 53,248 wide) and far below sizes whose
# buffers could not be allocated, so a corrupted size is refused rather than attempted.
MAX_FEATURES = 1 << 24


class _Checker:
    """Raises ValueError("<manifest path>: <field> must be <expected>; got <value>")."""

    def __init__(self, path: Path | str):
        self.path = path

    def fail(self, field: str, expected: str, value: Any) -> None:
        shown = repr(value)
        raise ValueError(f"{self.path}: {field} must be {expected}; got {shown[:80]}{'...' if len(shown) > 80 else ''}")

    def dict_(self, field: str, value: Any) -> dict:
        if not isinstance(value, dict):
            self.fail(field, "an object", value)
        return value

    def bool_(self, field: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(field, "true or false", value)
        return value

    def int_(self, field: str, value: Any, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            self.fail(field, f"an integer in [{low}, {high}]", value)
        return value

    def dtype(self, field: str, value: Any, optional: bool = False) -> None:
        if (value is None and optional) or (isinstance(value, str) and value in FLOAT_DTYPES):
            return
        self.fail(field, f"one of {', '.join(FLOAT_DTYPES)}{' or null' if optional else ''}", value)

    def features(self, field: str, value: Any) -> int:
        return self.int_(field, value, 1, MAX_FEATURES)


def _check_quant_linear(c: _Checker, where: str, record: dict) -> None:
    c.features(f"{where}.in_features", record.get("in_features"))
    c.features(f"{where}.out_features", record.get("out_features"))
    c.bool_(f"{where}.bias", record.get("bias"))
    c.dtype(f"{where}.bias_dtype", record.get("bias_dtype"), optional=True)
    spec = c.dict_(f"{where}.spec", record.get("spec"))
    try:
        QuantSpec(**spec)
    except (TypeError, ValueError) as exc:
        c.fail(f"{where}.spec", f"a valid quantization spec ({exc})", spec)
    c.bool_(f"{where}.online_hadamard", record.get("online_hadamard", False))
    if record.get("act_bits") not in ACT_BITS or isinstance(record.get("act_bits"), bool):
        c.fail(f"{where}.act_bits", "null, 8 or 4", record.get("act_bits"))
    granularity = record.get("act_granularity", "per_token")
    if granularity not in ACT_GRANULARITIES or (granularity == "per_group" and record.get("act_bits") is None):
        c.fail(f"{where}.act_granularity", "'per_token', or 'per_group' with act_bits 8 or 4", granularity)


def _check_linear(c: _Checker, where: str, record: dict, with_bias: bool = True) -> None:
    c.features(f"{where}.in_features", record.get("in_features"))
    c.features(f"{where}.out_features", record.get("out_features"))
    if with_bias:
        c.bool_(f"{where}.bias", record.get("bias"))
    c.dtype(f"{where}.dtype", record.get("dtype", "float32"))


def _check_low_rank(c: _Checker, where: str, record: dict) -> None:
    c.features(f"{where}.in_features", record.get("in_features"))
    c.features(f"{where}.out_features", record.get("out_features"))
    c.features(f"{where}.rank", record.get("rank"))
    c.bool_(f"{where}.bias", record.get("bias"))
    c.dtype(f"{where}.bias_dtype", record.get("bias_dtype"), optional=True)
    factors = c.dict_(f"{where}.factors", record.get("factors"))
    for label in ("in_proj", "out_proj"):
        sub = c.dict_(f"{where}.factors.{label}", factors.get(label))
        if sub.get("type") == "Linear":
            _check_linear(c, f"{where}.factors.{label}", sub, with_bias=False)
        elif sub.get("type") == "QuantLinear":
            _check_quant_linear(c, f"{where}.factors.{label}", sub)
        else:
            c.fail(f"{where}.factors.{label}.type", "Linear or QuantLinear", sub.get("type"))


def _check_record(c: _Checker, name: str, record: Any) -> None:
    where = f"modules[{name!r}]"
    record = c.dict_(where, record)
    kind = record.get("type")
    if kind == "QuantLinear":
        _check_quant_linear(c, where, record)
    elif kind in ("Linear", "HadamardLinear"):
        _check_linear(c, where, record)
    elif kind == "ScaleFreeRMSNorm":
        c.features(f"{where}.dim", record.get("dim"))
        eps = record.get("eps")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps and math.isfinite(eps)):
            c.fail(f"{where}.eps", "a positive finite number", eps)
    elif kind == "LowRankLinear":
        _check_low_rank(c, where, record)
    else:
        c.fail(f"{where}.type", "QuantLinear, LowRankLinear, HadamardLinear, Linear or ScaleFreeRMSNorm", kind)


def validate_manifest(manifest: Any, path: Path | str) -> dict:
    """Returns ``manifest`` when it follows the schema above; raises ValueError naming the first bad field.

    A manifest of a newer format version is refused with a message saying to upgrade tcompress.
    """
    c = _Checker(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tcompress manifest (expected an object with format {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}, newer than this tcompress reads ({FORMAT_VERSION}); "
            "upgrade tcompress"
        )
    c.int_("format_version", version, 1, FORMAT_VERSION)
    files = manifest.get("files")
    if files is None or isinstance(files, dict) and WEIGHTS not in files:
        raise ValueError(f"{path} is malformed: it records no size and checksum for {WEIGHTS}")
    c.dict_("files", files)
    for name, entry in files.items():
        entry = c.dict_(f"files[{name!r}]", entry)
        c.int_(f"files[{name!r}].bytes", entry.get("bytes"), 0, 1 << 62)
        digest = entry.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set(string.hexdigits.lower())):
            c.fail(f"files[{name!r}].sha256", "64 lowercase hex digits", digest)
    dtype = manifest.get("dtype")
    if isinstance(dtype, list) and dtype:
        for i, item in enumerate(dtype):
            c.dtype(f"dtype[{i}]", item)
    else:
        c.dtype("dtype", dtype, optional=True)
    recipe = manifest.get("recipe", [])
    if not isinstance(recipe, list):
        c.fail("recipe", "a list of recipe configs", recipe)
    for i, entry in enumerate(recipe):
        try:
            config_from_dict(entry)
        except (TypeError, ValueError) as exc:
            c.fail(f"recipe[{i}]", f"a recipe config tcompress knows ({exc})", entry)
    modules = c.dict_("modules", manifest.get("modules", {}))
    for name, record in modules.items():
        _check_record(c, name, record)
    return manifest
