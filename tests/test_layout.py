"""The package's one import direction: each part of catgan/ imports only the parts below it.

Model, data, metrics and training code never imports tracking, study or generate; the stages and
the CLI tie the parts together. Every import counts, at the top, inside functions or under
TYPE_CHECKING: a type-only import is still a knot.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "catgan"
BASE = {"config", "errors", "fileio", "images", "progress"}  # catgan/<name>.py: used everywhere
BELOW = {  # part -> the parts it may import, besides itself and BASE
    "base": set(),
    "data": set(),
    "model": set(),
    "metrics": {"model"},
    "training": {"data", "model", "metrics"},
    "report": set(),
    "tracking": {"training"},
    "generate": {"data", "model", "tracking"},
    "study": {"data", "model", "metrics", "training", "report", "tracking", "generate"},
    "cli": {"data", "model", "metrics", "training", "report", "tracking", "generate", "study"},
}
TOP = {"cli": "cli", "demo": "cli", "__init__": "base"}  # top-level modules that are not BASE
# Modules held to less than their part may import. The GAN step is the update alone (no run
# machinery: checkpoint, tracker, monitor, loop); the training state is what a checkpoint holds.
# The study folder's writer and reader and the standalone study run where only torch, numpy and
# Pillow are installed (the GPU machine): never MLflow, DVC or the pages.
NARROW = {
    "catgan.training.step": {"catgan.config", "catgan.model", "catgan.training.outputs",
                             "catgan.training.state"},
    "catgan.training.state": {"catgan.config", "catgan.model", "catgan.training.checkpoint",
                              "catgan.training.distributed"},
    "catgan.study.folder": {"catgan.errors", "catgan.fileio", "catgan.generate.weightsfile",
                            "catgan.study", "catgan.study.arms", "catgan.training.outputs"},
    "catgan.study.standalone": {"catgan.config", "catgan.data", "catgan.errors", "catgan.metrics",
                                "catgan.study", "catgan.study.folder", "catgan.training"},
}


def part(module: str) -> str | None:
    """The part of dotted ``catgan.…`` module name, or None for a name outside catgan."""
    names = module.split(".")
    if names[0] != "catgan":
        return None
    if len(names) == 1:
        return "base"
    if names[1] in BASE:
        return "base"
    return TOP.get(names[1], names[1])


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def is_module(name: str, root: Path = PACKAGE) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in ``path``, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from catgan.x import y` imports module catgan.x.y when there is one
            found += [(node.lineno, f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}", root)
                       else base) for alias in node.names]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        here = part(module_name(path, root))
        if here not in BELOW:
            out.append(f"{path.relative_to(root.parent)}: belongs to no known part ({here!r}); "
                       "add it to tests/test_layout.py's BELOW or move it into a part")
            continue
        allowed = BELOW[here] | {here, "base"}
        narrow = NARROW.get(module_name(path, root))
        for line, name in imports(path, root):
            there = part(name)
            if there is not None and there not in allowed:
                out.append(f"{path.relative_to(root.parent)}:{line} imports {name}: {here} may "
                           f"import only {', '.join(sorted(allowed))}")
            elif there is not None and narrow is not None and not any(
                    name == ok or name.startswith(ok + ".") for ok in narrow):
                out.append(f"{path.relative_to(root.parent)}:{line} imports {name}: it may import "
                           f"only {', '.join(sorted(narrow))}")
    return out


def test_each_part_imports_only_the_parts_below_it():
    found = violations()
    assert not found, "imports against the layout:\n" + "\n".join(found)


def test_an_import_against_the_direction_is_named(tmp_path):
    """The check itself: a training module that imports tracking is reported, by file and line."""
    fake = tmp_path / "catgan"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "loop.py").write_text(
        "import torch\n\ndef f():\n    from catgan.tracking.client import MlflowTracker\n")
    (fake / "model").mkdir()
    (fake / "model" / "nets.py").write_text("from catgan import errors\n")
    assert violations(fake) == ["catgan/training/loop.py:4 imports catgan.tracking.client: "
                                "training may import only base, data, metrics, model, training"]


def test_the_gan_step_importing_the_run_machinery_is_named(tmp_path):
    """The narrow modules' check itself: a step that imports the checkpoint code is reported."""
    fake = tmp_path / "catgan"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "checkpoint.py").write_text("")
    (fake / "training" / "step.py").write_text("from catgan.model.losses import GAN_LOSSES\n"
                                               "from catgan.training import checkpoint\n")
    assert violations(fake) == [
        "catgan/training/step.py:2 imports catgan.training.checkpoint: it may import only "
        "catgan.config, catgan.model, catgan.training.outputs, catgan.training.state"]
    assert set(NARROW) <= {module_name(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir()
                                           if p.is_dir() and p.name != "__pycache__"))
def test_each_part_says_what_it_holds_and_may_import(package):
    init = PACKAGE / package / "__init__.py"
    assert init.is_file(), f"catgan/{package}/ has no __init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "May import" in doc, f"catgan/{package}/__init__.py: its docstring does not say what it may import"
