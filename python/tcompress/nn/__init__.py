"""Modules that replace parts of a model (no architecture names here: ``models/`` knows where they go)."""

from .fake_quantize import fake_quantize
from .hadamard_linear import HadamardLinear, matmul_input
from .linear_block import LinearBlock
from .low_rank_linear import LowRankLinear
from .quant_linear import QuantLinear, QuantSpec
from .scale_free_norm import ScaleFreeRMSNorm

__all__ = [
    "HadamardLinear",
    "LinearBlock",
    "LowRankLinear",
    "QuantLinear",
    "QuantSpec",
    "ScaleFreeRMSNorm",
    "fake_quantize",
    "matmul_input",
]
