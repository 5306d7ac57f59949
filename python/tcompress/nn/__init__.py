"""Modules that replace parts of a model (no architecture names here: ``models/`` knows where they go)."""

from .low_rank_linear import LowRankLinear
from .quant_linear import QuantLinear, QuantSpec

__all__ = ["LowRankLinear", "QuantLinear", "QuantSpec"]
