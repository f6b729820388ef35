"""Every stage declares all project code its script imports, so `dvc repro` cannot go stale."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catgan.codedeps import closure
from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_every_project_file_its_script_imports(stage):
    spec = STAGES[stage]
    module = spec["cmd"].split()[-1]  # python -m stages.x, or catgan.launch ... --module stages.x
    script = ROOT / (module.replace(".", "/") + ".py")
    assert script.is_file(), f"dvc.yaml stage '{stage}': {module} is not a module under stages/"
    deps = spec["deps"]
    missing = sorted(str(p.relative_to(ROOT)) for p in closure(script) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage '{stage}' runs {script.name}, which imports {missing}; " \
                        "add them to its deps"


def test_the_closure_follows_imports_inside_functions():
    files = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages" / "train.py")}
    assert "catgan/launch.py" not in files  # the launcher runs the stage, the stage does not import it
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
