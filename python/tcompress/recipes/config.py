"""The base of every recipe config: a versioned dataclass that round-trips through JSON.

A model that went through :func:`tcompress.recipes.compress_` records each config's ``to_dict()`` in
``model.tcompress_config``; :func:`tcompress.recipes.save_compressed` writes that list, and loading rebuilds the
configs with :func:`config_from_dict`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from typing import ClassVar

_REGISTRY: dict[str, type[RecipeConfig]] = {}


@dataclasses.dataclass
class RecipeConfig:
    """Base class. Subclasses set ``kind`` (the name in JSON) and ``version`` (bumped when fields change meaning)."""

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    def to_dict(self) -> dict:
        """``{"kind": ..., "version": ..., **fields}`` with JSON-friendly values (tuples become lists)."""
        fields = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            fields[f.name] = list(value) if isinstance(value, tuple) else value
        return {"kind": self.kind, "version": self.version, **fields}

    @classmethod
    def from_dict(cls, d: dict) -> RecipeConfig:
        """Rebuilds a config; unknown keys warn (a newer tcompress wrote them) and are ignored."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names) - {"kind", "version"})
        if unknown:
            warnings.warn(f"{cls.__name__}.from_dict: ignoring unknown keys {unknown}", UserWarning, stacklevel=2)
        version = d.get("version", cls.version)
        if version > cls.version:
            warnings.warn(
                f"{cls.__name__}.from_dict: written by a newer version ({version} > {cls.version})",
                UserWarning,
                stacklevel=2,
            )
        kwargs = {}
        for name in names:
            if name in d:
                value = d[name]
                kwargs[name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


def config_from_dict(d: dict) -> RecipeConfig:
    """The config a ``to_dict()`` came from, chosen by its ``kind``."""
    kind = d.get("kind")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown recipe kind {kind!r}: expected one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind].from_dict(d)


def select(names, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """The names matching any ``include`` fnmatch pattern and no ``exclude`` pattern, in their given order."""
    return [
        n
        for n in names
        if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)
    ]
