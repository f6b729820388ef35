"""Which project files running a script can load: its import closure, read from the code.

The one source of truth for what a DVC stage depends on (tests/test_stage_deps.py checks dvc.yaml
against it) and for what shapes training (catgan/training/loop.py hashes it into the checkpoint key).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (``catgan.x.y``), or None outside the project."""
    if not name.startswith("catgan"):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports at run time, at the top or inside functions, as dotted names
    (``if TYPE_CHECKING:`` blocks never run)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            # `from catgan import checkpoint` imports a module, not a name
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def closure(script: Path) -> set[Path]:
    """Project files that running ``script`` can load, following imports transitively."""
    seen: set[Path] = set()
    # run as a module (python -m catgan.training.launch), a script loads its packages first
    todo = [script, *(d / "__init__.py" for d in script.parents
                      if d.is_relative_to(ROOT) and d != ROOT and (d / "__init__.py").is_file())]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            parts = name.split(".")
            # importing catgan.a.b runs catgan/__init__.py and catgan/a/__init__.py too
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found:
                    todo.append(found)
    return seen
