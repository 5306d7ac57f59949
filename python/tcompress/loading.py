"""``tcompress.load``: whatever tcompress can open, a checkpoint or a compressed folder, and its tokenizer.

The one place that knows both kinds of folder, so that neither ``models/`` (checkpoints, hub ids, GGUF files, named
models) nor ``recipes/`` (folders written by :func:`~tcompress.recipes.save_compressed`) imports the other's loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import models
from ._files import COMPRESSED_MANIFEST
from .recipes import load_compressed


def load(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode: :func:`tcompress.models.load` for checkpoints, hub ids, ``.gguf`` files and
    the named real models; :func:`tcompress.recipes.load_compressed` (plus the tokenizer saved beside it) for a folder
    holding ``tcompress.json``, loaded as saved onto ``device`` (``dtype``, ``device_map``, ``offload_folder`` and
    ``max_memory`` then do not apply).

    Raises:
        ValueError: an unknown ``dtype`` (checked before anything is read), an unsupported architecture, or a
            malformed compressed folder.
        FileNotFoundError: a named model is not installed, or the path does not exist.
    """
    dtype = models.resolve_dtype(dtype)
    source = models.resolve_model(name_or_path)
    if source.gguf_file is None and (Path(source.path) / COMPRESSED_MANIFEST).is_file():
        from transformers import AutoTokenizer

        return load_compressed(source.path, device=device), AutoTokenizer.from_pretrained(source.path)
    return models.load(
        name_or_path,
        dtype=dtype,
        device=device,
        device_map=device_map,
        offload_folder=offload_folder,
        max_memory=max_memory,
    )
