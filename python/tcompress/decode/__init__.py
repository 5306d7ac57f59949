"""Token generation on any model tcompress loads or compresses: ``tcompress.generate(model, input_ids, n)``.

- :mod:`tcompress.decode.loop`: :func:`generate`, :class:`DecodeStats`, :func:`next_tokens` (transformers' token
  choice);
- :mod:`tcompress.decode.native`: :class:`NativeDecoder`, one native call per token for packed Llama-family models.
"""

from .loop import RUNTIMES, DecodeStats, generate, next_tokens
from .native import NativeDecoder

__all__ = ["RUNTIMES", "DecodeStats", "NativeDecoder", "generate", "next_tokens"]
