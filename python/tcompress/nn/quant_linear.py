"""QuantLinear: a linear layer whose weight is stored packed (int8, or two int4 per byte) and multiplied by
:func:`tcompress.ops.qlinear` without ever materialising the fp32 weight.

Storage format: :mod:`tcompress.ops.quantize`. Two run-time options: ``online_hadamard`` (the input goes through
:func:`tcompress.ops.hadamard_transform` first; the weight already holds the matching H, see
:class:`~tcompress.nn.HadamardLinear`) and ``act_bits`` (the input is quantized dynamically, symmetric, to 8 or 4 bits
and multiplied by :func:`tcompress.ops.qlinear_a8`; ``act_granularity="per_group"``: one scale per weight group
instead of per token). The buffers (``qweight``, ``scales``, ``zeros`` when asymmetric,
``bias``) are ordinary state-dict entries, so a model holding QuantLinears saves and loads with safetensors.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import ops
from ..ops.quantize import num_groups
from ._prepared import PreparedOperands
from .hadamard_linear import HadamardLinear, check_hadamard_size

ACT_BITS = (None, 8, 4)
ACT_GRANULARITIES = ops.ACT_GRANULARITIES

_SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How one weight is quantized: what a QuantLinear needs to rebuild its buffers from a checkpoint.

    Attributes:
        bits: 4 or 8.
        group_size: input columns per scale; None = one scale per output channel.
        symmetric: symmetric codes (implicit zero point) or asymmetric (stored uint8 zero points).
        scale_dtype: "float32", "float16" or "bfloat16".
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    scale_dtype: str = "float32"

    def __post_init__(self):
        if type(self.bits) is not int or self.bits not in (4, 8):
            raise ValueError(f"QuantSpec: bits must be 4 or 8; got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise TypeError(f"QuantSpec: symmetric must be True or False; got {self.symmetric!r}")
        if self.group_size is not None and (type(self.group_size) is not int or self.group_size <= 0):
            raise ValueError(
                f"QuantSpec: group_size must be a positive int or None (per channel); got {self.group_size!r}"
            )
        if self.scale_dtype not in _SCALE_DTYPES:
            raise ValueError(
                f"QuantSpec: scale_dtype must be one of {', '.join(_SCALE_DTYPES)}; got {self.scale_dtype!r}"
            )

    @property
    def torch_scale_dtype(self) -> torch.dtype:
        return _SCALE_DTYPES[self.scale_dtype]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantSpec:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @classmethod
    def of(cls, config) -> QuantSpec:
        """The spec of any object with ``bits``/``group_size``/``symmetric``/``scale_dtype`` (e.g. QuantizeConfig)."""
        if isinstance(config, QuantSpec):
            return config
        missing = [a for a in ("bits", "group_size", "symmetric") if not hasattr(config, a)]
        if missing:
            raise TypeError(
                "QuantSpec.of: expected a QuantSpec, a QuantizeConfig or an object with bits, group_size and "
                f"symmetric; got {type(config).__name__} (no {', '.join(missing)})"
            )
        return cls(config.bits, config.group_size, config.symmetric, getattr(config, "scale_dtype", "float32"))


def _weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias (out,) or None) of an nn.Linear or a transformers Conv1D (weight stored (in, out))."""
    if isinstance(module, nn.Linear):
        return module.weight, module.bias
    # transformers' Conv1D (GPT-2's projections) is y = x @ W + b with W stored (in, out). Compared by name so
    # this module does not import transformers.
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2:
        return module.weight.t(), module.bias
    raise TypeError(
        f"QuantLinear.from_linear: expected an nn.Linear or a transformers Conv1D; got {type(module).__name__}"
    )


def check_quantizable(weight: torch.Tensor, spec: QuantSpec, label: str) -> None:
    """weight (out, in): raises ValueError naming ``label`` unless ``spec`` can quantize it (group size divides
    in_features, int4 needs an even in_features, every value finite)."""
    out_features, in_features = weight.shape
    if spec.group_size is not None and in_features % spec.group_size:
        raise ValueError(
            f"cannot quantize {label}: group_size {spec.group_size} does not divide its in_features "
            f"{in_features} (weight {out_features} x {in_features}); use a divisor of {in_features} or "
            "group_size=None (per output channel)"
        )
    if spec.bits == 4 and in_features % 2:
        raise ValueError(f"cannot quantize {label} to int4 (two columns per byte): in_features {in_features} is odd")
    bad = int((~torch.isfinite(weight.detach())).sum())
    if bad:
        raise ValueError(f"cannot quantize {label}: its weight holds NaN or Inf ({bad} non-finite values)")


def _check_loaded_scales(module: QuantLinear, incompatible_keys) -> None:
    """After load_state_dict: refuses non-finite scales, which quantization never produces (it refuses weights
    whose scales would overflow) but an edited or corrupted checkpoint can hold. With a non-finite scale the kernels
    and the pure-torch reference disagree (the kernels scale after summing a group, the reference before: -inf vs
    NaN), so such a layer is refused once here rather than checked on every call."""
    scales = module.scales
    if scales.device.type == "meta":
        return
    bad = ~torch.isfinite(scales)
    if bool(bad.any()):
        row, group = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"QuantLinear: the loaded scales hold {int(bad.sum())} non-finite value(s) (first: row {row}, group "
            f"{group} = {float(scales[row, group])}); the checkpoint is corrupted or was edited"
        )


class QuantLinear(PreparedOperands, nn.Module):
    """x (..., in_features) -> (..., out_features), with a packed int4/int8 weight.

    Buffers: ``qweight`` (out, in) uint8 for int8 or (out, in // 2) for int4; ``scales`` (out, groups);
    ``zeros`` (out, groups) uint8 when asymmetric; ``bias`` (out,) when the layer has one. The output has x's dtype.
    A forward checks only x: the buffers are checked and laid out once (see :class:`PreparedOperands`).
    """

    _operand_buffers = ("qweight", "scales", "zeros", "bias")
    act_granularity = "per_token"  # what a QuantLinear pickled before the attribute existed quantized with

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: QuantSpec,
        bias: bool = True,
        bias_dtype: torch.dtype = torch.float32,
        *,
        online_hadamard: bool = False,
        act_bits: int | None = None,
        act_granularity: str = "per_token",
    ):
        super().__init__()
        check_act_bits(act_bits, "QuantLinear", act_granularity)
        if online_hadamard:
            check_hadamard_size(in_features, "QuantLinear")
        if spec.group_size is not None and in_features % spec.group_size:
            raise ValueError(f"QuantLinear: group_size {spec.group_size} does not divide in_features {in_features}")
        if spec.bits == 4 and in_features % 2:
            raise ValueError(
                f"QuantLinear: int4 packs two columns per byte, so in_features must be even; got {in_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.spec = spec
        self.online_hadamard = bool(online_hadamard)
        self.act_bits = act_bits
        self.act_granularity = act_granularity
        groups = num_groups(in_features, spec.group_size)
        packed_in = in_features // 2 if spec.bits == 4 else in_features
        self.register_buffer("qweight", torch.zeros(out_features, packed_in, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=spec.torch_scale_dtype))
        self.register_buffer("zeros", None if spec.symmetric else torch.zeros(out_features, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype) if bias else None)
        self.register_load_state_dict_post_hook(_check_loaded_scales)

    @classmethod
    def from_linear(
        cls, module: nn.Module, config, name: str = "", act_bits: int | None = None, act_granularity: str = "per_token"
    ) -> QuantLinear:
        """Quantizes an ``nn.Linear`` or transformers ``Conv1D`` (round to nearest) into a new QuantLinear.

        A :class:`HadamardLinear` becomes a QuantLinear with ``online_hadamard=True`` (same weight, same transform).

        Args:
            module: the layer; its weight must be finite.
            config: a :class:`QuantSpec`, or any object with ``bits``, ``group_size``, ``symmetric`` (and
                optionally ``scale_dtype``), e.g. ``tcompress.recipes.QuantizeConfig``.
            name: the module's name, used in error messages.
            act_bits: None (fp activations), 8 or 4 (dynamic symmetric activation quantization).
            act_granularity: with act_bits, one activation scale "per_token" or "per_group" (per weight group).

        Raises:
            TypeError: not a linear layer. ValueError: a group size that does not divide in_features, NaN/Inf.
        """
        spec = QuantSpec.of(config)
        weight, bias = _weight_and_bias(module)
        check_quantizable(weight, spec, f"module {name!r}" if name else type(module).__name__)
        out_features, in_features = weight.shape
        w = weight.detach()
        q = ops.quantize(w, spec.bits, spec.group_size, spec.symmetric, spec.torch_scale_dtype)
        bias_dtype = bias.dtype if bias is not None else torch.float32
        online = isinstance(module, HadamardLinear)
        new = cls(
            in_features,
            out_features,
            spec,
            bias=bias is not None,
            bias_dtype=bias_dtype,
            online_hadamard=online,
            act_bits=act_bits,
            act_granularity=act_granularity,
        ).to(w.device)
        new.qweight.copy_(ops.pack_int4(q.codes) if spec.bits == 4 else q.codes)
        new.scales.copy_(q.scales)
        if q.zeros is not None:
            new.zeros.copy_(q.zeros)
        if bias is not None:
            new.bias = bias.detach().clone()
        return new

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) / .half() must move the packed state but never re-round the scales: the codes were
        # computed against the scales in spec.scale_dtype, and rounding them again would add error silently.
        kept = {name: self._buffers.pop(name) for name in ("scales", "zeros") if self._buffers.get(name) is not None}
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.qweight.device
            for name, tensor in kept.items():
                self._buffers[name] = tensor.to(device)
        return self

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) fp32: the weight this layer multiplies by (for checks and for fake-quant comparisons)."""
        codes = ops.unpack_int4(self.qweight) if self.spec.bits == 4 else self.qweight
        return ops.dequantize_reference(codes, self.scales, self.zeros, self.spec.bits, self.spec.group_size)

    def _prepare(self, qweight, scales, zeros, bias) -> ops.PreparedQLinear:
        return ops.PreparedQLinear(
            qweight, scales, zeros, self.spec.bits, self.spec.group_size, bias, self.act_bits, self.act_granularity
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.online_hadamard:
            x = ops.hadamard_transform(x)
        return self.prepared()(x)

    def extra_repr(self) -> str:
        g = "per-channel" if self.spec.group_size is None else f"group_size={self.spec.group_size}"
        kind = "symmetric" if self.spec.symmetric else "asymmetric"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int{self.spec.bits}, {g}, {kind}, "
            f"scales={self.spec.scale_dtype}, bias={self.bias is not None}"
            + (", online_hadamard=True" if self.online_hadamard else "")
            + (f", act_bits={self.act_bits}" if self.act_bits is not None else "")
            + (", act_granularity=per_group" if self.act_granularity == "per_group" else "")
        )


def check_act_bits(act_bits, label: str, act_granularity: str = "per_token") -> None:
    """Raises ValueError naming ``label`` unless ``act_bits`` is None (fp activations), 8 or 4, and
    ``act_granularity`` is "per_token" or "per_group" (the latter with integer activations only)."""
    if act_bits is not None and (type(act_bits) is not int or act_bits not in ACT_BITS):
        raise ValueError(f"{label}: act_bits must be None (floating-point activations), 8 or 4; got {act_bits!r}")
    ops.check_act_granularity(label, act_granularity, act_bits)
