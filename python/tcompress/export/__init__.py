"""Export a (compressed) model to the formats serving engines load.

- :func:`export_compressed_tensors`: a tcompress-quantized Llama-family model as a Hugging Face checkpoint in the
  compressed-tensors format (transformers with ``compressed-tensors``, vLLM), with the weights tcompress computes
  with, bit for bit.
- :func:`export_gguf`: a Llama-family model as a GGUF file (llama.cpp, transformers' GGUF reader), its float
  weights quantized to Q8_0 or Q4_0.

Both refuse, with the reason, what the target architecture cannot compute (an online Hadamard transform, low-rank or
substituted layers, a rotated LayerNorm model ...), and write into a temporary sibling renamed into place.
"""

from .compressed_tensors import export_compressed_tensors
from .gguf import export_gguf

__all__ = ["export_compressed_tensors", "export_gguf"]
