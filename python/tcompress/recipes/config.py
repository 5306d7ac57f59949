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
        own = cls.__dict__.get("__post_init__")

        def __post_init__(self, _own=own):
            # Every field's type first (symmetric="yes" would otherwise be accepted and written into recipe JSON),
            # then the subclass's own value checks.
            check_field_types(self)
            if _own is not None:
                _own(self)

        cls.__post_init__ = __post_init__

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


_SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _matches(value, annotation: str) -> bool:
    """Whether ``value`` has the type the field annotation string names (the forms recipe configs use: int, float,
    bool, str, None, tuple[X, ...] and unions of them with ``|``)."""
    for option in (part.strip() for part in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option in _SCALARS:
            # bool is an int to Python, never to a config: bits=True is a mistake, not 1.
            if isinstance(value, _SCALARS[option]) and (option == "bool" or not isinstance(value, bool)):
                return True
        elif option.startswith("tuple[") and option.endswith(", ...]"):
            item = option[len("tuple[") : -len(", ...]")]
            if item == "str" and isinstance(value, str):
                return True  # a single pattern, wrapped into a tuple by the config
            if isinstance(value, (tuple, list)) and all(_matches(v, item) for v in value):
                return True
    return False


_WORDS = {"int": "an int", "float": "a number", "bool": "True or False", "str": "a string", "None": "None"}


def _describe(annotation: str) -> str:
    """'int | None' -> 'an int or None'; 'tuple[str, ...]' -> 'a sequence of strings'."""
    words = []
    for option in (part.strip() for part in annotation.split("|")):
        if option.startswith("tuple["):
            item = option[len("tuple[") : -len(", ...]")]
            words.append(f"a sequence of {'strings' if item == 'str' else item + 's'}")
        else:
            words.append(_WORDS.get(option, option))
    return " or ".join(words)


def check_field_types(config: RecipeConfig) -> None:
    """Raises TypeError naming the config, the field, the expected type and the value, for the first field whose
    value does not have its annotated type."""
    for f in dataclasses.fields(config):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        value = getattr(config, f.name)
        if not _matches(value, annotation):
            raise TypeError(f"{type(config).__name__}: {f.name} must be {_describe(annotation)}; got {value!r}")


def config_from_dict(d: dict) -> RecipeConfig:
    """The config a ``to_dict()`` came from, chosen by its ``kind``.

    Raises:
        ValueError: ``d`` is not a dict, or its ``kind`` is not a registered recipe.
        TypeError: a field of the wrong type.
    """
    if not isinstance(d, dict):
        raise ValueError(f"a recipe config must be a dict with a 'kind'; got {type(d).__name__} {d!r}")
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
