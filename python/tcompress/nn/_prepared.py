"""Modules whose forward runs one op on fixed buffers keep the op's operands prepared (checked, laid out, pointers
taken) and make them again only when a buffer was replaced: a forward then checks only its input."""

from __future__ import annotations

from typing import Any


class PreparedOperands:
    """Mixin for an ``nn.Module``: ``_operand_buffers`` names the buffers (in order) that ``_prepare`` turns into
    the op's prepared operands; :meth:`prepared` returns them, made again after ``.to()``, a state-dict load that
    assigns, or accelerate's offload hooks swapping a buffer in (each replaces the tensor object). Values changed
    in place (``copy_``) keep the memory the operands point to, so they need nothing."""

    _operand_buffers: tuple[str, ...] = ()

    def _prepare(self, *buffers) -> Any:
        raise NotImplementedError

    def prepared(self) -> Any:
        held = self._buffers
        buffers = tuple(held.get(name) for name in self._operand_buffers)
        cached = self.__dict__.get("_prepared_operands")
        if cached is None or any(new is not old for new, old in zip(buffers, cached[0])):
            cached = (buffers, self._prepare(*buffers))
            self.__dict__["_prepared_operands"] = cached
        return cached[1]

    def __getstate__(self):
        # Prepared operands hold raw pointers into this module's buffers: a copy or a pickle makes its own.
        state = dict(super().__getstate__())
        state.pop("_prepared_operands", None)
        return state
