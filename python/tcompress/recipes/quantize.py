"""Weight-only round-to-nearest quantization: swap a model's projections for packed ``QuantLinear`` modules.

``compress_(model, QuantizeConfig(bits=4, group_size=128))`` quantizes every linear projection inside the blocks
(attention and MLP; the embeddings and the head stay as they are unless ``quantize_head=True``). Which modules
exist comes from :mod:`tcompress.models`; which of them change is chosen by fnmatch patterns over their names.
"""

from __future__ import annotations

import dataclasses

import torch

from .. import models
from ..nn import QuantLinear, QuantSpec
from ..nn.quant_linear import check_act_bits, check_quantizable
from .config import RecipeConfig, select


@dataclasses.dataclass
class QuantizeConfig(RecipeConfig):
    """Round-to-nearest weight quantization.

    Attributes:
        bits: 4 or 8.
        group_size: input columns per scale (must divide every selected module's in_features); None = one scale
            per output channel.
        symmetric: symmetric codes with an implicit zero point, or asymmetric with stored uint8 zero points.
        scale_dtype: storage dtype of the scales: "float32", "float16" or "bfloat16".
        include: fnmatch patterns over module names (``model.named_modules()``) selecting projections.
        exclude: patterns removing projections from the selection.
        quantize_head: also quantize the output head (untied from the embedding when the model ties them).
        act_bits: None (floating-point activations), 8 or 4: quantize the inputs of the quantized projections
            dynamically (W8A8, W4A8, W4A4), multiplied by :func:`tcompress.ops.qlinear_a8`.
        act_granularity: how activation scales are shared: ``"per_token"`` (one symmetric scale per row) or
            ``"per_group"`` (one per row and weight group, needs act_bits; with ``group_size=32`` llama.cpp's Q8_0
            activations, the integer decode path at Q4_0's perplexity, see the README's decoding section).
    """

    kind = "quantize"
    # 2: act_bits / act_granularity (a version-1 reader would drop them silently).
    version = 2

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    scale_dtype: str = "float32"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    quantize_head: bool = False
    act_bits: int | None = None
    act_granularity: str = "per_token"

    def __post_init__(self):
        QuantSpec.of(self)  # validates bits, group_size, scale_dtype with their own messages
        check_act_bits(self.act_bits, "QuantizeConfig", self.act_granularity)
        for field in ("include", "exclude"):
            value = getattr(self, field)
            if isinstance(value, str):
                value = (value,)
            if not all(isinstance(p, str) for p in value):
                raise TypeError(f"QuantizeConfig: {field} must be a sequence of fnmatch patterns; got {value!r}")
            setattr(self, field, tuple(value))

    def apply_(self, model: torch.nn.Module) -> dict:
        """Quantizes the selected projections of ``model`` in place; returns ``{"modules": [names], ...}``.

        Every selected module is checked (group size, finite weights) and quantized before the first one is
        replaced, so a failure leaves the model untouched. ``exclude`` also applies to the head.
        """
        arch = models.architecture(model)
        candidates = dict(arch.iter_projections(model))
        head_name = None
        if self.quantize_head:
            head = arch.head(model)
            head_name = next(n for n, m in model.named_modules() if m is head)
            candidates[head_name] = head
        names = select(candidates, self.include, self.exclude)
        if head_name is not None and head_name not in names and not select([head_name], ("*",), self.exclude):
            head_name = None  # excluded explicitly
        elif head_name is not None and head_name not in names:
            names.append(head_name)
        if not names:
            raise ValueError(
                f"QuantizeConfig: the patterns include={list(self.include)} exclude={list(self.exclude)} select "
                f"no projection of this {arch.family} model (e.g. {next(iter(candidates), 'none')!r})"
            )
        already = [n for n in names if isinstance(candidates[n], QuantLinear)]
        if already:
            raise ValueError(
                f"QuantizeConfig: {len(already)} selected module(s) are already quantized (e.g. {already[0]!r}); "
                "narrow include/exclude to the ones still in floating point"
            )
        spec = QuantSpec.of(self)
        untie = head_name is not None and arch.is_tied(model)
        # Quantize everything first (a scale can still overflow its dtype here), then swap: all or nothing. Weights
        # that accelerate offloads are read while materialized, one module at a time.
        replacements = {}
        for name in names:
            with models.materialized(candidates[name]):
                check_quantizable(models.projection_weight(candidates[name]), spec, f"module {name!r}")
                replacements[name] = QuantLinear.from_linear(
                    candidates[name], spec, name=name, act_bits=self.act_bits, act_granularity=self.act_granularity
                )
        for name, module in replacements.items():
            models.set_module(model, name, module)
        if untie:
            # The embedding keeps its fp weights and the head is now a module of its own: a reload must not re-tie.
            model.config.tie_word_embeddings = False
        return {"modules": names, "bits": self.bits, "group_size": self.group_size, "act_bits": self.act_bits,
                "act_granularity": self.act_granularity}  # fmt: skip
