"""The import layering that docs/ARCHITECTURE.md states, checked on the source (every import, also inside functions).

Each part of the package may import only the parts listed for it below; the table is a DAG, so there is no import
circle between parts. Kernels (``ops``, ``_native``) are reached only through ``nn`` and the early-exit runtime, never
from ``analysis`` or ``recipes``; only ``models`` knows architecture names (not checked here: a convention).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "tcompress"

# part -> the parts it may import. Parts are top-level modules/packages of tcompress; the top (cli, report, export,
# loading, selfcheck, info, the package's __init__) may import anything.
ALLOWED: dict[str, set[str]] = {
    "_native": set(),
    "_files": set(),
    "hadamard": set(),
    "data": {"_files"},
    "ops": {"_native", "hadamard"},
    "nn": {"ops", "hadamard"},
    "models": {"_files"},
    "evaluate": {"data", "models"},
    "early_exit": {"models", "nn", "ops"},
    "decode": {"_native", "hadamard", "models", "nn", "early_exit"},
    "analysis": {"models", "nn", "data", "evaluate", "early_exit"},
    "recipes": {"models", "nn", "hadamard", "analysis", "_files"},
}
TOP = {"__init__", "cli", "report", "export", "loading", "selfcheck", "info"}
# The package's version string, a constant set before any import in __init__.
ALWAYS = {"__version__"}


def _part(module: str) -> str:
    """'tcompress.recipes.rotate' -> 'recipes'; 'tcompress' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """The tcompress modules (dotted) that ``path`` imports, relative imports resolved."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(relative if path.name == "__init__.py" else relative[:-1])
    if path.name == "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tcompress")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    found.add(".".join([*base, node.module]))
                else:  # from .. import models, ops
                    found.update(".".join([*base, a.name]) for a in node.names)
            elif node.module and node.module.split(".")[0] == "tcompress":
                found.add(node.module)
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
        for target in _imports(path):
            part = _part(target)
            if part != source and part not in ALWAYS and not part.startswith("_C") and part != "_cuda":
                edges.setdefault(source, set()).add(part)
    return edges


def test_every_part_of_the_package_is_placed_in_the_layering():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts = {p for p in parts if not p.startswith((".", "__pycache__")) and p != "__init__"}
    unplaced = parts - set(ALLOWED) - TOP - {"_C", "_cuda"}
    assert not unplaced, f"parts with no place in the layering (add them to ALLOWED and ARCHITECTURE.md): {unplaced}"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_part_imports_only_the_parts_below_it(part):
    imported = _edges().get(part, set())
    assert imported <= ALLOWED[part], f"{part} imports {sorted(imported - ALLOWED[part])}, which it may not"


def test_the_allowed_imports_have_no_circle():
    state: dict[str, str] = {}

    def visit(part: str, path: list[str]) -> None:
        if state.get(part) == "done":
            return
        assert state.get(part) != "open", f"import circle: {' -> '.join([*path, part])}"
        state[part] = "open"
        for below in ALLOWED.get(part, ()):
            visit(below, [*path, part])
        state[part] = "done"

    for part in ALLOWED:
        visit(part, [])


def test_the_checker_sees_relative_and_function_level_imports(tmp_path):
    # The checker must find what it polices: a relative import inside a function, a "from .. import x", an absolute one.
    module = PACKAGE / "analysis" / "tokens.py"
    found = _imports(module)
    assert "tcompress.early_exit" in found and "tcompress.models" in found
    assert "tcompress.ops" in _imports(PACKAGE / "nn" / "quant_linear.py")
