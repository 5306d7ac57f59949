"""Modules that replace parts of a model (no architecture names here: ``models/`` knows where they go)."""

from .quant_linear import QuantLinear, QuantSpec

__all__ = ["QuantLinear", "QuantSpec"]
