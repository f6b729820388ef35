"""Every stage declares all project code its script imports, so `dvc repro` cannot go stale."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


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
    todo = [script]
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


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_every_project_file_its_script_imports(stage):
    spec = STAGES[stage]
    script = ROOT / spec["cmd"].split()[-1]
    deps = spec["deps"]
    missing = sorted(str(p.relative_to(ROOT)) for p in closure(script) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage '{stage}' runs {script.name}, which imports {missing}; " \
                        "add them to its deps"


def test_the_closure_follows_imports_inside_functions():
    files = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages" / "train.py")}
    # tracking is imported at the top of the stage; mlflow's own modules are not project code
    assert "catgan/tracking.py" in files and "catgan/train.py" in files
    assert not any(f.startswith("tests/") for f in files)


@pytest.mark.parametrize("stage", ["evaluate", "plot"])
def test_evaluate_and_plot_load_no_training_code(stage):
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('s', 'stages/{stage}.py')\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in sys.modules if m.startswith('catgan')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    loaded = proc.stdout
    assert "catgan.outputs" in loaded or stage == "plot"
    assert "'catgan.train'" not in loaded and "'catgan.checkpoint'" not in loaded, loaded
