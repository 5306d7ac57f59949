"""tcompress: structural analysis and post-training compression of transformer language models.

Implements the experiments of "Variance Is Not Importance: Structural Analysis of Transformer Compressibility
Across Model Scales" (arXiv 2604.20682) on native CPU/CUDA kernels. Layers, each usable alone:

- ``tcompress.ops``: ``torch.library`` ops with native kernels (``hadamard_transform`` ...);
- ``tcompress.hadamard``: Hadamard constructions and dense matrices (:func:`hadamard_matrix`, :func:`random_hadamard`);
- :func:`load` (checkpoints and compressed folders) and ``tcompress.models``: supported causal LMs and where their
  parts are;
- ``tcompress.data`` and ``tcompress.evaluate``: text sources, token windows, perplexity and KL;
- ``tcompress.nn`` (``QuantLinear``) and ``tcompress.recipes``: :func:`compress_` with recipe configs
  (``QuantizeConfig``), :func:`save_compressed` / :func:`load_compressed`;
- ``tcompress.early_exit``: generation and teacher-forced evaluation that stop a token at a confident exit head;
- :func:`generate`: token generation on any model tcompress loads or compresses (greedy or sampled, timed);
- :func:`info` / :func:`cuda_available`: what this install can run.
"""

__version__ = "0.1.0"

from . import analysis, data, early_exit, evaluate, hadamard, models, nn, ops, recipes
from ._native import cuda_available, get_isa, set_isa, supported_isas
from .decode import DecodeStats, generate
from .hadamard import SUPPORTED_FACTORS, hadamard_matrix, random_hadamard, random_hadamard_signs
from .info import info
from .loading import load
from .recipes import QuantizeConfig, RotateConfig, compress_, load_compressed, save_compressed

__all__ = [
    "DecodeStats",
    "QuantizeConfig",
    "RotateConfig",
    "SUPPORTED_FACTORS",
    "__version__",
    "analysis",
    "compress_",
    "cuda_available",
    "data",
    "early_exit",
    "evaluate",
    "generate",
    "get_isa",
    "hadamard",
    "hadamard_matrix",
    "info",
    "load",
    "load_compressed",
    "models",
    "nn",
    "ops",
    "random_hadamard",
    "random_hadamard_signs",
    "recipes",
    "save_compressed",
    "set_isa",
    "supported_isas",
]
