"""Every stage declares all project code its script imports, so `dvc repro` cannot go stale."""
from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catgan.training.codedeps import closure
from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES_INIT = ROOT / "stages" / "__init__.py"


def names(paths) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


@functools.cache
def loaded_on_import(module: str) -> frozenset[Path]:
    """The project files Python loads to import ``module`` (``stages.x``), read from sys.modules
    in a fresh interpreter: what the stage imports at its top, found without catgan.training.codedeps."""
    code = (f"import importlib, json, sys\nimportlib.import_module({module!r})\n"
            "print(json.dumps([m.__file__ for name, m in sys.modules.items()\n"
            "                  if name.split('.')[0] in ('catgan', 'stages')]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return frozenset(Path(f) for f in json.loads(proc.stdout))


def modules_run(cmd: str) -> list[str]:
    """The modules a stage's command runs: ``python -m X``, and the launcher's ``--module Y``."""
    words = cmd.split()
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-m", "--module")]


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.slow  # a fresh interpreter importing torch, 3-4 s a stage: out of the quick loop
def test_stage_declares_every_project_file_its_script_imports(stage):
    spec, files = STAGES[stage], set()
    for module in modules_run(spec["cmd"]):
        script = ROOT / (module.replace(".", "/") + ".py")
        assert script.is_file(), f"dvc.yaml stage '{stage}': {module} is not a project module"
        # What Python loads checks the closure, which also follows imports inside functions and
        # decides the training code that the checkpoint key hashes.
        loaded, found = loaded_on_import(module) - {STAGES_INIT}, closure(script) - {STAGES_INIT}
        assert not loaded - found, f"codedeps.closure({module}) misses {names(loaded - found)}"
        files |= loaded | found
    missing = names(p for p in files if not covered(p, spec["deps"]))
    assert not missing, f"dvc.yaml stage '{stage}' runs `{spec['cmd']}`, which imports " \
                        f"{missing}; add them to its deps"


def test_the_stages_package_runs_no_code():
    """``python -m stages.x`` runs stages/__init__.py, which no stage lists in its deps."""
    body = ast.parse(STAGES_INIT.read_text()).body
    docstring_only = len(body) == 1 and isinstance(body[0], ast.Expr) \
        and isinstance(body[0].value, ast.Constant)
    assert docstring_only, "stages/__init__.py may hold a docstring only"


def test_the_closure_follows_imports_inside_functions():
    files = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages" / "train.py")}
    assert "catgan/training/launch.py" not in files  # the launcher runs the stage, the stage does not import it
    # tracking is imported at the top of the stage; mlflow's own modules are not project code
    assert "catgan/tracking/client.py" in files and "catgan/training/loop.py" in files
    assert not any(f.startswith("tests/") for f in files)


@pytest.mark.parametrize("stage", ["evaluate", "plot"])
def test_evaluate_and_plot_load_no_training_code(stage):
    loaded = names(loaded_on_import(f"stages.{stage}"))
    assert "catgan/training/outputs.py" in loaded or stage == "plot"
    assert "catgan/training/loop.py" not in loaded and "catgan/training/checkpoint.py" not in loaded, loaded
