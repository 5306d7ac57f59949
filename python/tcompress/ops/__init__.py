"""tcompress ops: ``torch.library`` ops in the ``tcompress`` namespace, with native CPU/CUDA kernels.

Each op is one declaration (:mod:`tcompress.ops._op`): a schema, checks, a fake (meta) implementation for
``torch.compile``, CPU and CUDA kernels from the compiled modules, and a pure-torch reference (the fallback and the
test oracle). Modules that call the same weights many times hold them prepared (:class:`PreparedQLinear`,
:class:`PreparedLinearBlock`): a call then checks only its input.
"""

from ._qlinear_checks import ACT_GRANULARITIES, check_act_granularity
from .exit_gate import ExitGate, ExitGateHead, exit_gate, exit_gate_head, exit_gate_reference
from .hadamard import hadamard_reference, hadamard_transform, hadamard_transform_
from .int8_activations import quantize_activations_reference
from .linear_block import PreparedLinearBlock, linear_block, linear_block_reference
from .qlinear import PreparedQLinear, qlinear, qlinear_a8, qlinear_a8_reference, qlinear_reference
from .quantize import (
    QuantizedWeight,
    dequantize,
    dequantize_reference,
    pack_int4,
    pack_int4_reference,
    quantize,
    quantize_reference,
    unpack_int4,
    unpack_int4_reference,
)

__all__ = [
    "ACT_GRANULARITIES",
    "check_act_granularity",
    "ExitGate",
    "exit_gate",
    "exit_gate_reference",
    "ExitGateHead",
    "exit_gate_head",
    "linear_block",
    "PreparedLinearBlock",
    "linear_block_reference",
    "PreparedQLinear",
    "qlinear_a8",
    "qlinear_a8_reference",
    "quantize_activations_reference",
    "QuantizedWeight",
    "dequantize",
    "dequantize_reference",
    "hadamard_reference",
    "hadamard_transform",
    "hadamard_transform_",
    "pack_int4",
    "pack_int4_reference",
    "qlinear",
    "qlinear_reference",
    "quantize",
    "quantize_reference",
    "unpack_int4",
    "unpack_int4_reference",
]
