"""Shared fixtures: tiny params and data so every training test runs in seconds on 2 cores."""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from catgan.config import parse_params

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def tiny_params():
    def make(**groups):
        return parse_params(merge(TINY, groups))

    return make


@pytest.fixture
def tiny_images():
    """Smooth random images: structure for D to find, 64x64 like the real set."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    return np.ascontiguousarray(low.repeat(8, axis=2).repeat(8, axis=3))


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
    """The test's environment for the real CLIs: this venv first, no MLflow or DVC settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return {**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
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
