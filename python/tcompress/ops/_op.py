"""One declaration per op: its schema, checks, fake, pure-torch reference, native launch and backward. The
``torch.library`` registration, the eager fast path and the reference fallback are generated from it, the same way
for every op.

An op is reached one of two ways, and its Python checks run exactly once on each:

- Eagerly, through :meth:`Op.call` (what the public functions in this package use): a plain call that needs no
  autograd graph (not compiling, CPU or CUDA tensors) is checked and launched directly, without the dispatcher,
  whose few microseconds are most of a batch-1 call at small sizes.
- Through the dispatcher (a call that needs gradients, ``torch.compile``, ``torch.ops.tcompress.<name>``, the meta
  device and every other device): the registered fake, CPU/CUDA kernel or default implementation checks the
  arguments, then runs the shape function, the native launch or the pure-torch reference.

The default implementation (every device without a native kernel) is the reference. On CPU and CUDA the native
launch runs, or the reference when this build or machine cannot run the native module (a warning says so once).
The C entry points keep checks of their own: they are a public API too.

A declaration's functions take the schema's arguments in order:

- ``check(label, *args) -> ready``: raises TypeError/ValueError with messages that start with ``label``; returns
  what the fake and the launch need (sizes, normalised values), so they do not recompute it.
- ``fake(ready, *args)``: empty outputs of the right shapes, dtypes and device (tracing, the meta device).
- ``reference(*args)``: the pure-torch implementation with the schema's semantics (mutating ops write their
  outputs); the test oracle.
- ``launch(native, ready, *args)``: the native kernel through ``native`` (``tcompress._C`` on CPU,
  ``tcompress._cuda`` on CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import _common


@dataclass(frozen=True)
class OpDeclaration:
    """Everything about one op; :class:`Op` registers it. ``differentiable``: positions of the tensor arguments
    whose ``requires_grad`` sends an eager call through the dispatcher (autograd); empty for ops without a
    backward."""

    name: str
    schema: str
    check: Callable[..., Any]
    fake: Callable[..., Any]
    reference: Callable[..., Any]
    launch: Callable[..., Any]
    mutates_args: tuple[str, ...] = ()
    backward: Callable[..., Any] | None = None
    setup_context: Callable[..., Any] | None = None
    differentiable: tuple[int, ...] = field(default=(0,))


class Op:
    """A registered op (``torch.ops.tcompress.<name>``) and its eager entry :meth:`call`."""

    registered: list[Op] = []  # every op of the package, in registration order

    def __init__(self, declaration: OpDeclaration):
        d = self.declaration = declaration
        self.qualname = f"tcompress::{d.name}"
        qualname = self.qualname

        def default(*args):
            d.check(qualname, *args)
            return d.reference(*args)

        def fake(*args):
            return d.fake(d.check(qualname, *args), *args)

        def kernel(*args):
            return self._run(d.check(qualname, *args), args)

        custom = torch.library.custom_op(qualname, default, mutates_args=d.mutates_args, schema=d.schema)
        custom.register_fake(fake)
        custom.register_kernel(("cpu", "cuda"), kernel)
        if d.backward is not None:
            custom.register_autograd(d.backward, setup_context=d.setup_context)
        self.dispatch = getattr(torch.ops.tcompress, d.name).default
        Op.registered.append(self)

    def _run(self, ready, args: tuple):
        """Native launch on a CPU/CUDA tensor, or the reference where the native module cannot run."""
        native = _common.native_module(args[0], self.qualname)
        if native is None:
            return self.declaration.reference(*args)
        return self.declaration.launch(native, ready, *args)

    def call(self, label: str, *args):
        """The op on ``args`` (the schema's, in order); errors name ``label`` on the direct path (the public
        function's name) and the schema name on the dispatcher's."""
        if self.direct(args):
            return self._run(self.declaration.check(label, *args), args)
        if not isinstance(args[0], torch.Tensor):
            self.declaration.check(label, *args)  # the op's own message, not the dispatcher's schema error
        return self.dispatch(*args)

    def call_prepared(self, operands, x: torch.Tensor, schema_args: tuple, *differentiable):
        """The op on x and weight operands prepared once (``operands.launch(native, x)``, or None where there are no
        pointers): launched directly when the eager path applies (``differentiable``: the prepared tensors whose
        ``requires_grad`` matters), else dispatched with the schema's other arguments. x is already checked."""
        if operands is not None and _common.direct_launch_ok(x, *differentiable):
            native = _common.native_module(x, self.qualname)
            if native is not None:
                return operands.launch(native, x)
        return self.dispatch(x, *schema_args)

    def direct(self, args: tuple) -> bool:
        """True when a call on ``args`` may skip the dispatcher (see the module docstring)."""
        grads = [args[i] for i in self.declaration.differentiable if isinstance(args[i], torch.Tensor)]
        return _common.direct_launch_ok(args[0], *grads)
