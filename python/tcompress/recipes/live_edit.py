"""Edit the live model and put it back: how the report's steps try many variants of one model without copying it.

A deep copy of Mistral-7B per variant is 14–29 GB of device memory each; :func:`restoring` instead records the model's
module tree (which object sits in every slot: cheap, no tensor data) and, when the body may write into existing
tensors (a rotation fused into the weights, the reconstruction wall writing Ŵ), one host copy of every parameter and
buffer. On exit — also after an exception — every slot gets its original module, parameter and buffer object back
and every recorded tensor its original values, so the model computes exactly what it did before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def restoring(model: nn.Module, *, weights: bool = True) -> Iterator[nn.Module]:
    """Yields ``model`` and puts it back as it was when the body ends.

    Args:
        model: any module (a transformers model: ``config.tie_word_embeddings`` and ``tcompress_config`` are restored
            too).
        weights: also keep a host copy of every tensor's values (needed when the body writes into existing tensors;
            costs one copy of the model in host memory). False restores only which module/parameter/buffer object
            sits where — enough for recipes that swap modules and leave the originals untouched (quantization,
            factorization, substitution). Tensors on the ``meta`` device (offloaded by accelerate) are not copied:
            their values live in accelerate's offload store, which recipes do not write.
    """
    tree = [(m, dict(m._modules), dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    saved: dict[int, tuple[torch.Tensor, torch.Tensor, torch.device, torch.dtype]] = {}
    if weights:
        for _module, _, params, buffers in tree:
            for t in (*params.values(), *buffers.values()):
                if t is None or id(t) in saved or t.device.type == "meta":
                    continue
                saved[id(t)] = (t, t.detach().to("cpu", copy=True), t.device, t.dtype)
    config = getattr(model, "config", None)
    tied = getattr(config, "tie_word_embeddings", None)
    had_record = hasattr(model, "tcompress_config")
    record = list(getattr(model, "tcompress_config", []))
    try:
        yield model
    finally:
        for m, modules, params, buffers in tree:
            m._modules.clear()
            m._modules.update(modules)
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)
        with torch.no_grad():
            for t, host, device, dtype in saved.values():
                if t.shape == host.shape and t.dtype == dtype and t.device == device:
                    t.copy_(host)
                else:  # the body re-pointed the tensor's data (``.data = ...``): give it its own back
                    t.data = host.to(device=device, dtype=dtype)
        if config is not None and tied is not None:
            config.tie_word_embeddings = tied
        if had_record:
            model.tcompress_config = record
        elif hasattr(model, "tcompress_config"):
            del model.tcompress_config
