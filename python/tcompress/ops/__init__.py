"""tcompress ops: ``torch.library`` ops in the ``tcompress`` namespace, with native CPU/CUDA kernels.

Each op has a schema, a fake (meta) implementation for ``torch.compile``, CPU and CUDA kernels from the compiled
modules, and a pure-torch reference (the fallback and the test oracle).
"""

from .hadamard import hadamard_reference, hadamard_transform, hadamard_transform_

__all__ = ["hadamard_reference", "hadamard_transform", "hadamard_transform_"]
