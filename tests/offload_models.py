"""Tiny random models that accelerate dispatches with real offload, beside the same model loaded plainly.

:func:`offloaded_pair` saves a tiny random GPT-2 or Mistral (``model_factories``) with ``save_pretrained``, with a
small byte-level tokenizer so that :func:`tcompress.models.load` can read the folder, and loads it twice: plainly, and
with :func:`offload_device_map`, which puts the embeddings and block 0 on ``"cpu"`` and the later blocks, the final
norm and the head on ``"disk"`` (an offload folder inside the directory). On a machine whose main device is the CPU,
accelerate offloads only the ``"disk"`` entries: their weights sit on ``meta`` until an ``AlignDevicesHook`` loads them
for a forward pass (with a GPU, the ``"cpu"`` entries would be offloaded too).

A tied head (GPT-2) stays with the embedding on ``"cpu"``: accelerate writes a tied tensor to the offload folder
under one name only, so a disk-offloaded head tied to a CPU embedding fails to load at the first forward
(``KeyError: 'lm_head.weight'``); ``device_map="auto"`` never splits tied weights that way.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from model_factories import FACTORIES, VOCAB
from tcompress import models
from torch import nn

#: The families the harness builds.
FAMILIES = ("gpt2", "mistral")


@dataclasses.dataclass
class OffloadedPair:
    """One saved tiny model, loaded twice.

    Attributes:
        family: ``"gpt2"`` or ``"mistral"``.
        model: loaded with :func:`offload_device_map` (later blocks, final norm and untied head on ``meta``).
        plain: loaded without a device map: the reference.
        windows: (4, 32) int64 random token ids in the vocabulary, seeded.
        path: the saved folder (the offload folder is ``path / "offload"``).
        device_map: the map ``model`` was loaded with.
    """

    family: str
    model: nn.Module
    plain: nn.Module
    windows: torch.Tensor
    path: Path
    device_map: dict[str, str]


def save_byte_tokenizer(directory: str | os.PathLike) -> None:
    """Writes a byte-level tokenizer (the 256 bytes, ids 0..255, ``<s>`` = 256, no merges) into ``directory``."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab["<s>"] = len(vocab)
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>").save_pretrained(directory)


def offload_device_map(model: nn.Module) -> dict[str, str]:
    """Embeddings and block 0 on ``"cpu"``; later blocks, final norm and head on ``"disk"`` (a tied head on ``"cpu"``).

    Keys are the module paths of :func:`tcompress.models.architecture`, plus the rotary embedding where the family
    has one (it holds buffers).
    """
    spec = models.architecture(model)
    placement = {spec.embeddings_path: "cpu"}
    for path in (spec.position_embeddings_path, spec.rotary_path):
        if path is not None:
            placement[path] = "cpu"
    for i in range(len(spec.blocks(model))):
        placement[f"{spec.blocks_path}.{i}"] = "cpu" if i == 0 else "disk"
    placement[spec.final_norm_path] = "disk"
    placement[spec.head_path] = "cpu" if spec.is_tied(model) else "disk"
    return placement


def offloaded_pair(family: str, directory: str | os.PathLike, seed: int = 0) -> OffloadedPair:
    """Saves ``FACTORIES[family](seed)`` into ``directory`` and loads it offloaded and plainly (both fp32, eval)."""
    directory = Path(directory)
    original = FACTORIES[family](seed)
    original.save_pretrained(directory)
    save_byte_tokenizer(directory)
    device_map = offload_device_map(original)
    model, _ = models.load(directory, device_map=device_map, offload_folder=directory / "offload")
    plain, _ = models.load(directory)
    windows = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(seed))
    return OffloadedPair(family, model, plain, windows, directory, device_map)


def meta_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that sit on ``meta`` (offloaded) right now."""
    return [name for name, p in model.named_parameters() if p.device.type == "meta"]
