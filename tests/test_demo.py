"""`python -m catgan.demo` with a bad -S value: one line, exit 2, the previous demo kept.

The full demo runs in tests/test_dvc_pipeline.py; here its experiments are made as DVC makes them,
refs under refs/exps/ at HEAD, without training: the check must come before any DVC call."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY, clone_project, env, sh

pytestmark = pytest.mark.slow  # the real `dvc exp list`

NAMES = ["demo-baseline", "demo-fused"]


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size = 0 is not allowed; expected a value >= 1"),
    ("train.batchsize=8", "-S train.batchsize: no such key in params.yaml"),
    ("train.betas=[0.5", "-S train.betas=[0.5: DVC cannot parse it"),
])
def test_a_bad_override_fails_in_one_line_before_the_old_demo_is_removed(override, message,
                                                                          tmp_path):
    project = clone_project(tmp_path / "catgan", TINY)
    head = sh(project, "git", "rev-parse", "HEAD").strip()
    for name in NAMES:
        commit = sh(project, "git", "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", name).strip()
        sh(project, "git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/{name}", commit)
    assert sh(project, "dvc", "exp", "list", "--name-only").split() == NAMES

    proc = subprocess.run([sys.executable, "-m", "catgan.demo", "-S", override], cwd=project,
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert sh(project, "dvc", "exp", "list", "--name-only").split() == NAMES
