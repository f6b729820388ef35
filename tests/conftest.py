"""Shared fixtures: tiny params and data so every training test runs in seconds on 2 cores."""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import yaml

from catgan.config import parse_params

ROOT = Path(__file__).resolve().parents[1]

# The project's .dvc/config turns DVC's usage report off, but tests also run dvc, from this process
# (catgan's own calls) and from its children, in repositories of their own or in none.
os.environ["DVC_NO_ANALYTICS"] = "1"

TINY = {
    "data": {"source": "synthetic", "synthetic_count": 24, "workers": 1},
    "model": {"variant": "fused"},
    "train": {"epochs": 2, "batch_size": 4, "steps_per_epoch": 2, "threads": 1,
              "log_every": 1},
    "eval": {"num_samples": 16, "batch_size": 16, "kid_subset_size": 8, "monitor_samples": 8},
    "tracking": {"enabled": False},
}


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict):
            out[key] = merge(out.get(key, {}), value)
        else:
            out[key] = value
    return out


@pytest.fixture
def tiny_raw():
    """The tiny params as a plain dict, to edit and write as a params.yaml."""
    return copy.deepcopy(TINY)


def params_of(**groups):
    """The tiny params with ``groups`` merged in, parsed."""
    return parse_params(merge(TINY, groups))


def smooth_images() -> np.ndarray:
    """Smooth random images: structure for D to find, 64x64 like the real set."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    return np.ascontiguousarray(low.repeat(8, axis=2).repeat(8, axis=3))


@pytest.fixture
def tiny_params():
    return params_of


@pytest.fixture
def tiny_images():
    return smooth_images()


def missing(what: str, fix: str) -> NoReturn:
    """Skip a test this machine lacks ``what`` for; on CI (``CI`` set), which must have it, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: CI must provide it ({fix})")
    pytest.skip(f"{what}; {fix} to run this test")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A folder whose data/ holds TINY's fetched and preprocessed images, made once a session by
    the real stages. Tests only read it: they copy its data/ into projects of their own."""
    from test_stages import run_stage

    project = tmp_path_factory.mktemp("tiny_data")
    write_params(project, TINY)
    run_stage(project, "fetch")
    run_stage(project, "preprocess")
    return project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(folder: Path, raw: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BIN = Path(sys.executable).parent


def env() -> dict:
    """The test's environment for the real CLIs: this venv first, no MLflow or DVC settings but
    the usage report's, off."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return {**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def sh(project: Path, *cmd: str, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def clone_project(dest: Path, settings: dict) -> Path:
    """A git repository of the working tree (tracked and untracked-not-ignored files) whose
    params.yaml has ``settings`` merged in, committed."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(yaml.safe_load(
        (ROOT / "params.yaml").read_text()), settings), sort_keys=False))
    sh(dest, "git", "init", "-q")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "commit", "-qm", "tiny")
    return dest


# Tracking on, so that the experiments run from it log to MLflow.
REPRODUCED = merge(TINY, {"model": {"variant": "baseline"}, "train": {"epochs": 1},
                          "tracking": {"enabled": True}})


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> tuple[Path, str]:
    """A clone of the project (clone_project, REPRODUCED settings) whose `dvc repro` results are
    committed, and what that command printed. Made once a session for the real-DVC tests; they
    change only their own copy of it (copy_project)."""
    project = clone_project(tmp_path_factory.mktemp("reproduced") / "catgan", REPRODUCED)
    out = sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline results")
    return project, out


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of the project ``src`` with its git history, workspace and DVC cache, but neither its
    checkpoints nor its MLflow store, as a fresh clone would have: the store's experiment names its
    artifact folder by absolute path, so runs made in a copy would write into ``src``. A copy
    starts a store of its own when it needs one."""
    def side_stores(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(folder) == src
                and (n.startswith("mlflow.db") or n in ("mlartifacts", "checkpoints"))]

    shutil.copytree(src, dest, symlinks=True, ignore=side_stores)
    return dest
