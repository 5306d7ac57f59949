"""Hadamard matrices: which sizes have one and how it is built (:mod:`.constructions`, numpy, exact integers) and
dense torch matrices and the seeded random rotations that recipes fuse into weights (:mod:`.matrices`).

The fast transform itself is a kernel op, :func:`tcompress.ops.hadamard_transform` (in ``ops/`` with the other ops);
it reads its K x K base matrices from here.
"""

from .constructions import SUPPORTED_FACTORS, base_hadamard, factor_size, hadamard_matrix_numpy
from .matrices import hadamard_matrix, random_hadamard, random_hadamard_signs

__all__ = [
    "SUPPORTED_FACTORS",
    "base_hadamard",
    "factor_size",
    "hadamard_matrix",
    "hadamard_matrix_numpy",
    "random_hadamard",
    "random_hadamard_signs",
]
