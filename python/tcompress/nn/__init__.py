"""Modules that replace parts of a model (no architecture names here: ``models/`` knows where they go)."""

from .linear_block import LinearBlock
from .quant_linear import QuantLinear, QuantSpec

__all__ = ["LinearBlock", "QuantLinear", "QuantSpec"]
