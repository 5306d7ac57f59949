"""Plain forward passes over token windows, as every measurement runs them: the model in eval mode (its flags
restored afterwards), no KV cache, the ids on the device the embedding computes on (also for a model that accelerate
dispatched with offload, whose embedding weight sits on ``meta``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .offload import execution_device
from .table import architecture


@contextmanager
def plain_forwards(model: nn.Module) -> Iterator[Callable[[torch.Tensor], Any]]:
    """Within the block the model is in eval mode and ``forward(ids)`` runs it on ids (B, T) int64 (moved to the
    embedding's execution device) without a KV cache, returning what the model returns. Every module's training flag
    is restored on exit, also on errors. Gradients are the caller's choice (``torch.no_grad`` or not)."""
    device = execution_device(architecture(model).embeddings(model))
    # A Hugging Face model would otherwise build a KV cache that nothing reads.
    kwargs = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield lambda ids: model(ids.to(device), **kwargs)
    finally:
        for m, flag in training:
            m.training = flag
