"""``compress_(model, *configs)``: apply recipes in order and record them on the model."""

from __future__ import annotations

import torch

from .config import RecipeConfig


def compress_(model: torch.nn.Module, *configs: RecipeConfig) -> torch.nn.Module:
    """Applies each config's recipe to ``model`` in place, in order, and returns the model.

    Each applied config's ``to_dict()`` is appended to ``model.tcompress_config`` (a list), which
    :func:`tcompress.recipes.save_compressed` stores with the weights.

    Raises:
        TypeError: an argument is not a recipe config.
    """
    for config in configs:
        if not isinstance(config, RecipeConfig) or not hasattr(config, "apply_"):
            raise TypeError(
                f"compress_: expected recipe configs (e.g. QuantizeConfig(bits=4)); got {type(config).__name__}"
            )
    for config in configs:
        config.apply_(model)
        recorded = list(getattr(model, "tcompress_config", []))
        recorded.append(config.to_dict())
        model.tcompress_config = recorded
    return model
