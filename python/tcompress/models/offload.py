"""Models that accelerate splits over devices with offload: reading their weights and replacing their modules.

``load(..., device_map=...)`` with ``"cpu"`` or ``"disk"`` entries (on a machine whose main device is a GPU, ``"cpu"``
entries are offloaded too) leaves the offloaded weights on the ``meta`` device. Accelerate attaches an
``AlignDevicesHook`` with ``offload=True`` to every module that holds tensors directly (each projection, each norm):
its ``pre_forward`` loads the module's tensors from the hook's ``weights_map`` (a host-memory dict or safetensors files
on disk) onto the hook's ``execution_device``, and its ``post_forward`` puts them back on ``meta``. So outside a
forward pass ``module.weight`` is an empty meta tensor, and a new module swapped in by ``setattr`` has no hook at all.

What this module offers, each a no-op on a model without accelerate hooks:

- :func:`materialized`: ``with materialized(block): w = projection_weight(block.mlp.down_proj)`` gives the real
  tensors of a module and of all its submodules, on their execution device, for the duration;
- :func:`execution_device`: where a module computes (its hook's execution device, else its tensors' device);
- :func:`is_offloaded`: whether any tensor of a module is held by an offload hook;
- :func:`inherit_placement_` (used by :func:`tcompress.models.set_module`): a module that replaces one living under
  accelerate hooks gets a hook of its own with the same execution device, and is offloaded the same way (its tensors
  kept in host memory and loaded for each forward) when the module it replaces was offloaded.

accelerate is imported only when a module carries a hook (``_hf_hook``), so plain models never import it.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import nn

# How many materialized() contexts hold each offload hook's weights, so nested contexts (a block, then one of its
# projections) load once and offload on the outermost exit. Keyed weakly: a dropped module must not be kept alive.
_HOLDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _align_hooks(module: nn.Module) -> list:
    """The ``AlignDevicesHook`` objects attached to ``module`` itself (a ``SequentialHook`` is looked into)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    from accelerate.hooks import AlignDevicesHook

    hooks = getattr(hook, "hooks", (hook,))  # SequentialHook chains several
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(m, "_hf_hook", None) is not None for m in module.modules())


def _device(value: int | str | torch.device) -> torch.device:
    # accelerate stores GPU execution devices as bare indices.
    return torch.device("cuda", value) if isinstance(value, int) else torch.device(value)


def is_offloaded(module: nn.Module) -> bool:
    """Whether ``module`` or one of its submodules has tensors that an accelerate offload hook keeps on ``meta``."""
    return any(h.offload for m in module.modules() for h in _align_hooks(m))


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: where its inputs go and where :func:`materialized` puts its weights.

    The execution device of the first accelerate hook found on the module or its submodules (in ``modules()``
    order, so the module's own first); without hooks, the device of its first tensor that is not on ``meta`` (of any
    tensor, if all are); ``cpu`` for a module without tensors.
    """
    for sub in module.modules():
        for hook in _align_hooks(sub):
            if hook.execution_device is not None:
                return _device(hook.execution_device)
    first = None
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
        first = first or tensor.device
    return first or torch.device("cpu")


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the offloaded tensors of ``module`` and its submodules are real, on their execution device.

    ``with materialized(block): w = projection_weight(block.mlp.down_proj).clone()`` reads a weight whatever
    accelerate does; on a module without offload hooks it does nothing. Yields ``module``. Contexts nest (the
    weights are loaded once and put back on the outermost exit), and they are put back on errors too.

    The tensors are what the hooks load for a forward pass (accelerate's ``align_module_device`` does the same for
    one module; this covers a whole subtree): read them, copy them, build new modules from them. Two things do not
    work inside the block: writing to them (an offloaded module's weights come back from the hook's weights map at the
    next forward, so in-place edits are lost: build a new module and install it with
    :func:`tcompress.models.set_module`) and running the module (its hooks offload it again after the forward).
    """
    entered = []
    try:
        for sub in module.modules():
            for hook in _align_hooks(sub):
                if not hook.offload:
                    continue
                holds = _HOLDS.setdefault(hook, 0)
                if holds == 0:
                    hook.pre_forward(sub)  # loads the weights (what align_module_device calls too)
                _HOLDS[hook] = holds + 1
                entered.append((sub, hook))
        yield module
    finally:
        for sub, hook in reversed(entered):
            _HOLDS[hook] -= 1
            if _HOLDS[hook] == 0:
                hook.post_forward(sub, None)  # back to meta


def inherit_placement_(new: nn.Module, old: nn.Module, ancestors: Sequence[nn.Module] = ()) -> nn.Module:
    """Makes ``new`` run where ``old`` (the module it replaces, still in place or just removed) ran under accelerate.

    Nothing happens when neither ``old`` nor any of its submodules carries an accelerate hook (a model loaded without
    ``device_map``), or when ``new`` already carries hooks (e.g. an original module being put back). Otherwise ``new``
    gets an ``AlignDevicesHook`` on :func:`execution_device` of ``old`` (inputs moved there, same ``skip_keys``):

    - ``old`` offloaded (see :func:`is_offloaded`): ``new``'s tensors (parameters and persistent buffers of the whole
      subtree) move into a host-memory weights map and onto ``meta``; the hook loads them for each forward, as
      accelerate did for ``old`` (a disk-offloaded module's replacement is kept in host memory, not on disk);
    - otherwise ``new``'s tensors move to the execution device once.

    ``ancestors`` are the modules above the slot (model first), checked for an offload hook that manages its whole
    subtree by name (accelerate's ``preload_module_classes``), which cannot take a module it did not load.

    Returns ``new``.

    Raises:
        ValueError: ``new`` has tensors on ``meta`` but no hook (built from offloaded weights outside
            :func:`materialized`).
        NotImplementedError: an ancestor's offload hook manages the slot's tensors by name.
    """
    hooks = [h for sub in old.modules() for h in _align_hooks(sub)]
    if not hooks or _has_hooks(new):
        return new
    for ancestor in ancestors:
        if any(h.offload and h.place_submodules for h in _align_hooks(ancestor)):
            raise NotImplementedError(
                f"set_module: the slot lies inside a {type(ancestor).__name__} whose accelerate offload hook loads "
                "all its submodules' tensors by name (preload_module_classes); a replacement cannot be placed there"
            )
    on_meta = [n for n, t in _named_tensors(new) if t.device.type == "meta"]
    if on_meta:
        raise ValueError(
            f"set_module: the new {type(new).__name__} has tensors on the meta device ({', '.join(on_meta[:3])}); "
            "expected real tensors (read offloaded weights inside tcompress.models.materialized(...))"
        )
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    own = _align_hooks(old)
    device = execution_device(old)
    common = dict(
        execution_device=device,
        io_same_device=bool(own and own[0].io_same_device),
        skip_keys=hooks[0].skip_keys,
        place_submodules=True,
    )
    if is_offloaded(old):
        from accelerate.utils import named_module_tensors

        tensors = named_module_tensors(new, include_buffers=True, recurse=True, remove_non_persistent=True)
        weights = {name: tensor.detach().to("cpu") for name, tensor in tensors}
        hook = AlignDevicesHook(offload=True, offload_buffers=True, weights_map=weights, **common)
    else:
        hook = AlignDevicesHook(**common)
    add_hook_to_module(new, hook)  # its init_hook moves the tensors (to meta, or to the device)
    return new


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()
