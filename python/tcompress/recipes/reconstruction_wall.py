"""The reconstruction wall (the paper's finding 3): direct quantization Q(W) against factored quantized components
Q(A)·Q(B) and against Q(W − A·B) + A·B, at equal bits per weight.

Every variant quantizes with symmetric round-to-nearest (:func:`tcompress.nn.fake_quantize`, the storage format of
:mod:`tcompress.ops.quantize`) and fp16 scales, one per ``group_size`` input columns (per output row when ``group_size``
is None, i.e. g = in), and is applied as dequantized fp32 weights ("fake quant", which gives the same numbers as the
packed kernels). The factors of ``factored-int4`` use ragged groups (:func:`ragged_fake_quantize`): along an input
that g does not divide, the last group is shorter and still has its own scale, so the rank need not be a multiple of
g (the packed kernels compute the same Q(A)·Q(B) with the rank padded by zeros to a multiple of g; the bits counted
are those of the ragged format). Bits are counted exactly per layer: a b-bit code per weight plus 16 bits per scale
(⌈in/g⌉ scales per row), and 16 bits per element of any fp16 low-rank part.

The bit rule (the same for both models):

- ``direct-int4``: Q₄(W), 4 + 16/g bits per weight.
- ``factored-int4``: Q₄(A)·Q₄(B) with A (out, r), B (r, in) from the truncated SVD of W (singular values split
  evenly), each factor quantized with the same group size along its own input (r for A, in for B; ragged), at the
  largest even rank (int4 packs two per byte) whose exact total bits, 4·r·(out+in) + 16·(out·⌈r/g⌉ + r·⌈in/g⌉),
  do not exceed ``direct-int4``'s: r ≈ out·in/(out+in) less the scales' share, so the two differ by less than one
  rank step, 8·(out+in) + 32·⌈in/g⌉ bits (+ 16·out where A gains a group): at g = 64, 0.029 bits per weight at
  576 x 576 and 0.058 at 192 x 576.
- ``direct-int5``: Q₅(W), 5 + 16/g bits per weight: direct quantization given one more bit per weight.
- ``residual-int4+lr``: Q₄(W − L) + L (LoftQ / LQ-LoRA style) with L = A·B the rank-r truncated SVD of W kept in
  fp16 and counted: the low-rank part gets the same extra bit per weight as ``direct-int5``, so
  r = ⌊out·in / (16·(out+in))⌋ (the largest rank within it) and the total stays ≤ 5 + 16/g. A layer too small for
  rank 1 keeps r = 0 (it is then ``direct-int4``); ``refinements`` > 0 alternates L = SVD_r(W − Q₄(W − L)) as LoftQ
  does.

So the pairs at equal budget are (``direct-int4``, ``factored-int4``) and (``direct-int5``, ``residual-int4+lr``).

Measured per layer and pooled over layers: ||W − Ŵ||/||W||; the output error on the calibration inputs
||X·(W − Ŵ)ᵀ||/||X·Wᵀ|| (from XᵀX, see :mod:`tcompress.analysis.projection_inputs`); for Q(A)·Q(B) the terms of
Q(A)Q(B) − W = (AB − W) + ε_A·B + A·ε_B + ε_A·ε_B with ε = Q(·) − (·), as Frobenius norms next to ||A·B||, in weight
space and in output space; and, with a ``measure`` callable, the perplexity of each variant's model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from .. import models
from ..analysis.projection_inputs import DEFAULT_GROUP_BYTES, InputMoment, stream_input_moments
from ..nn import fake_quantize
from .factorize import truncated_svd
from .live_edit import restoring

VARIANTS = ("direct-int4", "factored-int4", "direct-int5", "residual-int4+lr")
SCALE_BITS = 16
LOWRANK_BITS = 16
CROSS_TERMS = ("truncation", "eps_a_b", "a_eps_b", "eps_a_eps_b", "ab")


def quantized_bits(out_features: int, in_features: int, bits: int, group_size: int | None) -> int:
    """Bits of an (out, in) matrix quantized to ``bits`` with one fp16 scale per group of ``group_size`` input
    columns, ⌈in/g⌉ groups per row (the last one shorter when g does not divide in), or per row when None."""
    groups = 1 if group_size is None else -(-in_features // group_size)
    return out_features * in_features * bits + out_features * groups * SCALE_BITS


def ragged_fake_quantize(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """w (out, in) -> (out, in) fp32: symmetric :func:`~tcompress.nn.fake_quantize` with groups of ``group_size``
    input columns of which the last may be shorter (one fp16 scale each); None = one scale per row.

    Equal to quantizing each group ``w[:, k·g:(k+1)·g]`` on its own with one scale per row. Computed by padding the
    input with zero columns up to a multiple of g: a zero changes no group's absolute maximum (hence no scale; an
    all-zero group gets scale 1 either way) and gets code 0, so the padded columns are simply dropped afterwards.
    """
    in_features = w.shape[-1]
    if group_size is None or in_features % group_size == 0:
        return fake_quantize(w, bits, group_size)
    padded = torch.nn.functional.pad(w.detach().float(), (0, -in_features % group_size))
    return fake_quantize(padded, bits, group_size)[:, :in_features]


def factored_rank(out_features: int, in_features: int, group_size: int | None) -> int:
    """The largest even rank r at which Q₄(A)·Q₄(B) (ragged groups) costs no more bits than Q₄(W) (see the module
    docstring), at most min(out, in); 0 when not even rank 2 fits."""
    budget = quantized_bits(out_features, in_features, 4, group_size)
    limit = min(out_features, in_features) // 2 * 2
    # Codes alone put r near out·in/(out+in); bits grow with r, so step from there to the largest fitting even r.
    r = min(out_features * in_features // (out_features + in_features) // 2 * 2, limit)
    while r + 2 <= limit and factored_bits(out_features, in_features, r + 2, group_size) <= budget:
        r += 2
    while r > 0 and factored_bits(out_features, in_features, r, group_size) > budget:
        r -= 2
    return r


def factored_bits(out_features: int, in_features: int, rank: int, group_size: int | None) -> int:
    """Bits of Q₄(A)·Q₄(B), A (out, rank) and B (rank, in), each with ragged groups along its own input."""
    return quantized_bits(out_features, rank, 4, group_size) + quantized_bits(rank, in_features, 4, group_size)


def residual_rank(out_features: int, in_features: int) -> int:
    """r = ⌊out·in / (16·(out+in))⌋: the fp16 rank that one extra bit per weight pays for."""
    return out_features * in_features // (LOWRANK_BITS * (out_features + in_features))


@dataclasses.dataclass
class WallLayer:
    """One projection under one variant.

    Attributes:
        name: the module name. shape: (out, in). rank: the rank used (0 for direct variants).
        bits: total bits of the stored layer. weight_sq_norm / weight_error_sq: ||W||², ||W − Ŵ||².
        output_sq_norm / output_error_sq: ||X·Wᵀ||², ||X·(W − Ŵ)ᵀ||² over the calibration tokens.
        cross_terms: for ``factored-int4``, squared Frobenius norms {term: (weight space, output space)} of
            ``truncation`` (AB − W), ``eps_a_b``, ``a_eps_b``, ``eps_a_eps_b`` and ``ab``; else empty.
    """

    name: str
    shape: tuple[int, int]
    rank: int
    bits: int
    weight_sq_norm: float
    weight_error_sq: float
    output_sq_norm: float
    output_error_sq: float
    cross_terms: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def weight_rel_error(self) -> float:
        return math.sqrt(self.weight_error_sq / self.weight_sq_norm) if self.weight_sq_norm else 0.0

    @property
    def output_rel_error(self) -> float:
        return math.sqrt(self.output_error_sq / self.output_sq_norm) if self.output_sq_norm else 0.0

    @property
    def bits_per_weight(self) -> float:
        return self.bits / (self.shape[0] * self.shape[1])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["cross_terms"] = {k: list(v) for k, v in self.cross_terms.items()}
        d.update(
            weight_rel_error=self.weight_rel_error,
            output_rel_error=self.output_rel_error,
            bits_per_weight=self.bits_per_weight,
        )
        return d


@dataclasses.dataclass
class WallVariant:
    """One variant over every projection: per-layer rows and the totals pooled over layers.

    Attributes:
        variant: one of :data:`VARIANTS`. layers: the per-layer rows.
        perplexity: the variant's model's perplexity when a ``measure`` was given, else None.
    """

    variant: str
    layers: list[WallLayer]
    perplexity: float | None = None

    def _pooled(self, num: str, den: str) -> float:
        d = sum(getattr(layer, den) for layer in self.layers)
        return math.sqrt(sum(getattr(layer, num) for layer in self.layers) / d) if d else 0.0

    @property
    def bits_per_weight(self) -> float:
        """Σ bits / Σ weights over all projections."""
        return sum(la.bits for la in self.layers) / sum(la.shape[0] * la.shape[1] for la in self.layers)

    @property
    def weight_rel_error(self) -> float:
        """sqrt(Σ ||W − Ŵ||² / Σ ||W||²) over all projections."""
        return self._pooled("weight_error_sq", "weight_sq_norm")

    @property
    def output_rel_error(self) -> float:
        """sqrt(Σ ||X(W − Ŵ)ᵀ||² / Σ ||XWᵀ||²) over all projections."""
        return self._pooled("output_error_sq", "output_sq_norm")

    def cross_term_totals(self) -> dict[str, tuple[float, float]]:
        """{term: (weight-space norm, output-space norm)} pooled over layers (sqrt of summed squares); {} if none."""
        if not any(layer.cross_terms for layer in self.layers):
            return {}
        return {
            term: tuple(math.sqrt(sum(la.cross_terms[term][i] for la in self.layers)) for i in range(2))
            for term in CROSS_TERMS
        }

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "bits_per_weight": self.bits_per_weight,
            "weight_rel_error": self.weight_rel_error,
            "output_rel_error": self.output_rel_error,
            "perplexity": self.perplexity,
            "cross_terms": {k: list(v) for k, v in self.cross_term_totals().items()},
            "layers": [layer.to_dict() for layer in self.layers],
        }


@dataclasses.dataclass
class WallResult:
    """The whole experiment: settings, the reference perplexity, and one :class:`WallVariant` per variant."""

    group_size: int | None
    preprocess: list[dict]
    calibration_tokens: int
    baseline_perplexity: float | None
    variants: list[WallVariant]

    def to_dict(self) -> dict:
        return {
            "group_size": self.group_size,
            "preprocess": self.preprocess,
            "calibration_tokens": self.calibration_tokens,
            "baseline_perplexity": self.baseline_perplexity,
            "variants": [v.to_dict() for v in self.variants],
        }


def reconstruct(
    weight: torch.Tensor,
    variant: str,
    group_size: int | None,
    moment: InputMoment,
    refinements: int = 0,
    output_sq_norm: float | None = None,
) -> tuple[torch.Tensor, WallLayer]:
    """weight (out, in) -> (Ŵ (out, in) fp32, its :class:`WallLayer` with name ""), for one variant.

    ``output_sq_norm`` is ||X·Wᵀ||² when the caller already has it (it does not depend on the variant, and costs an
    (out, in) x (in, in) float64 product: 1.7 TFLOP for Mistral-7B's down_proj).

    Raises:
        ValueError: an unknown variant; a variant that quantizes W itself with a ``group_size`` that does not divide
            in; ``factored-int4`` on a weight too small for rank 2 within direct int4's bits."""
    w = weight.detach().to(torch.float64)
    out_features, in_features = w.shape
    if variant in VARIANTS and variant != "factored-int4" and group_size is not None and in_features % group_size:
        raise ValueError(
            f"reconstruction_wall: {variant} quantizes W in whole groups, so group_size must divide in_features; "
            f"got group_size {group_size} for a {out_features} x {in_features} weight"
        )
    terms: dict[str, tuple[float, float]] = {}
    rank = 0
    if variant == "direct-int4" or variant == "direct-int5":
        bits = 4 if variant == "direct-int4" else 5
        w_hat = fake_quantize(w, bits, group_size).double()
        total_bits = quantized_bits(out_features, in_features, bits, group_size)
    elif variant == "factored-int4":
        rank = factored_rank(out_features, in_features, group_size)
        if rank == 0:
            raise ValueError(
                f"reconstruction_wall: a {out_features} x {in_features} weight admits no even rank for Q(A)·Q(B) at "
                f"group size {group_size} within the bits of direct int4 "
                f"({quantized_bits(out_features, in_features, 4, group_size)}; rank 2 needs "
                f"{factored_bits(out_features, in_features, 2, group_size)})"
            )
        f = truncated_svd(w, rank=rank)
        q_a = ragged_fake_quantize(f.a, 4, group_size).double()
        q_b = ragged_fake_quantize(f.b, 4, group_size).double()
        w_hat = q_a @ q_b
        eps_a, eps_b = q_a - f.a, q_b - f.b
        for term, matrix in (
            ("truncation", f.a @ f.b - w),
            ("eps_a_b", eps_a @ f.b),
            ("a_eps_b", f.a @ eps_b),
            ("eps_a_eps_b", eps_a @ eps_b),
            ("ab", f.a @ f.b),
        ):
            terms[term] = (float((matrix**2).sum()), moment.output_sq_norm(matrix))
        total_bits = factored_bits(out_features, in_features, rank, group_size)
    elif variant == "residual-int4+lr":
        rank = residual_rank(out_features, in_features)
        low_rank = _fp16_low_rank(w, rank)
        q = fake_quantize(w - low_rank, 4, group_size).double()
        for _ in range(refinements if rank > 0 else 0):
            low_rank = _fp16_low_rank(w - q, rank)
            q = fake_quantize(w - low_rank, 4, group_size).double()
        w_hat = q + low_rank
        total_bits = quantized_bits(out_features, in_features, 4, group_size) + LOWRANK_BITS * rank * (
            out_features + in_features
        )
    else:
        raise ValueError(f"reconstruction_wall: unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    error = w_hat - w
    layer = WallLayer(
        name="",
        shape=(out_features, in_features),
        rank=rank,
        bits=total_bits,
        weight_sq_norm=float((w**2).sum()),
        weight_error_sq=float((error**2).sum()),
        output_sq_norm=moment.output_sq_norm(w) if output_sq_norm is None else output_sq_norm,
        output_error_sq=moment.output_sq_norm(error),
        cross_terms=terms,
    )
    return w_hat.float(), layer


def reconstruction_wall(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    *,
    group_size: int | None = 64,
    rotate: bool = False,
    preprocess: Sequence = (),
    variants: Sequence[str] = VARIANTS,
    measure: Callable[[torch.nn.Module], object] | None = None,
    refinements: int = 0,
    baseline: float | None = None,
    max_moment_bytes: int = DEFAULT_GROUP_BYTES,
    batch_size: int = 8,
) -> WallResult:
    """Runs the reconstruction-wall experiment on ``model`` in place and puts the model back as it was.

    Memory: the model, one host copy of its tensors when preprocessing (to undo it), one host copy of the
    projections' Ŵ in the model's dtype, and one group of blocks' float64 input moments at a time
    (``max_moment_bytes``). Per variant, the moments of the (preprocessed) model stream group by group; each
    projection's Ŵ and errors are computed while its group's moments are in hand, Ŵ goes to the host; after the last
    group every Ŵ is written into the live weights and ``measure`` runs once. The moments therefore always
    describe the unquantized model, as the bit rule assumes.

    Args:
        model: a model of a family :mod:`tcompress.models` knows, with dense projections.
        calibration: (n, L) int64 calibration windows for the inputs' second moments (taken after ``preprocess``).
        group_size: input columns per fp16 scale (must divide every in_features; the groups of the factor A run
            along the rank and may end in a shorter one); None = one scale per output row.
        rotate: prepend ``RotateConfig(seed=0)`` (``tcompress.recipes.rotate``) to ``preprocess``.
        preprocess: recipe configs applied with ``compress_`` (in place, undone at the end) before anything is
            measured.
        variants: which of :data:`VARIANTS` to run.
        measure: model -> a number or an object with ``ppl`` (e.g. a perplexity closure); called on the
            preprocessed model (unless nothing is preprocessed and ``baseline`` is given) and on each variant's
            model — always the same live object, so ``measure`` must not cache by identity.
        refinements: LoftQ alternations for ``residual-int4+lr``.
        baseline: the unmodified model's number when the caller already has it (used only without preprocessing).
        max_moment_bytes: the budget of one group's float64 input moments.
        batch_size: calibration windows per forward pass.

    Raises:
        ValueError: an unknown variant, or a group size that does not divide some in_features (before any change).
    """
    from .compress import compress_

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"reconstruction_wall: unknown variant(s) {unknown}; expected some of {', '.join(VARIANTS)}")
    configs = list(preprocess)
    if rotate:
        from .rotate import RotateConfig

        configs.insert(0, RotateConfig(seed=0))
    arch = models.architecture(model)
    for name, module in arch.iter_projections(model):
        in_features = models.projection_weight(module).shape[1]
        if group_size is not None and in_features % group_size:
            raise ValueError(
                f"reconstruction_wall: group_size {group_size} does not divide in_features {in_features} of {name!r}"
            )
    results = []
    tokens = 0
    output_norms: dict[str, float] = {}  # ||X·Wᵀ||² per projection, the same for every variant
    # The host copy of every tensor is needed only to undo preprocessing; Ŵ itself is undone from ``originals``.
    with restoring(model, weights=bool(configs)):
        if configs:
            compress_(model, *configs)
        if (configs or baseline is None) and measure is not None:
            baseline = _ppl(measure(model))
        for variant in variants:
            layers, rebuilt = [], {}
            for _, moments in stream_input_moments(
                model, calibration, max_bytes=max_moment_bytes, batch_size=batch_size
            ):
                for name, moment in moments.items():
                    with models.materialized(model.get_submodule(name)):  # offloaded: read on the execution device
                        weight = models.projection_weight(model.get_submodule(name))
                        w_hat, layer = reconstruct(
                            weight, variant, group_size, moment, refinements, output_norms.get(name)
                        )
                    output_norms[name] = layer.output_sq_norm
                    layer.name = name
                    layers.append(layer)
                    rebuilt[name] = w_hat.to(device="cpu", dtype=weight.dtype)
                    tokens = moment.tokens
                del moments
            perplexity = None
            if measure is not None:
                with restoring(model, weights=False), torch.no_grad():  # puts back modules swapped for Ŵ
                    originals = {}  # the (preprocessed) weights on the host while Ŵ is in place
                    for name, module in list(arch.iter_projections(model)):
                        if models.is_offloaded(module):  # an offload store keeps no in-place edit: swap a module
                            models.set_module(model, name, _dense_like(module, rebuilt.pop(name)))
                            continue
                        weight = models.projection_weight(module)
                        originals[name] = weight.detach().to("cpu", copy=True)
                        weight.copy_(rebuilt.pop(name).to(weight.device))  # a view (transposed for Conv1D)
                    try:
                        perplexity = _ppl(measure(model))
                    finally:
                        for name, module in arch.iter_projections(model):
                            if name in originals:
                                models.projection_weight(module).copy_(originals.pop(name).to(module.weight.device))
            del rebuilt
            results.append(WallVariant(variant, layers, perplexity))
    return WallResult(group_size, [c.to_dict() for c in configs], tokens, baseline, results)


def _dense_like(module: torch.nn.Module, weight: torch.Tensor) -> torch.nn.Linear:
    """An ``nn.Linear`` computing x·Ŵᵀ + the module's bias, for ``weight`` Ŵ (out, in) (on the host)."""
    with models.materialized(module):
        bias = getattr(module, "bias", None)
        bias = None if bias is None else bias.detach().to("cpu", copy=True)
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _fp16_low_rank(w: torch.Tensor, rank: int) -> torch.Tensor:
    """w (out, in) float64 -> A·B (out, in) float64 from the rank-r truncated SVD with A and B rounded to fp16, as
    stored (zeros when rank is 0)."""
    if rank == 0:
        return torch.zeros_like(w)
    f = truncated_svd(w, rank=rank)
    return f.a.half().double() @ f.b.half().double()


def _ppl(value) -> float:
    return float(getattr(value, "ppl", value))
