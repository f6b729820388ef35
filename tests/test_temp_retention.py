"""pytest keeps temp folders only for failed tests: the clones, DVC caches, checkpoints and MLflow
stores of one green `make test` came to 7.8 GB, and pytest keeps the last three sessions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

INNER = '''
import pytest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


def test_passes(tmp_path, store):
    (tmp_path / "checkpoint").write_bytes(bytes(1000))
    (store / "mlflow.db").write_bytes(bytes(1000))


def test_fails(tmp_path):
    (tmp_path / "evidence").write_text("kept")
    assert PASSES
'''


def left_after(tmp_path: Path, passes: bool) -> set[str]:
    """The files a session of two tests leaves in pytest's temp root, under this project's
    pytest settings; the second test passes or fails."""
    tests, temproot = tmp_path / "tests", tmp_path / "temproot"
    tests.mkdir()
    temproot.mkdir()
    (tests / "test_inner.py").write_text(INNER.replace("PASSES", str(passes)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tests), "-p", "no:cacheprovider", str(tests)],
                          env={**environ, "PYTEST_DEBUG_TEMPROOT": str(temproot)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == (0 if passes else 1), proc.stdout[-3000:]
    return {p.name for p in temproot.rglob("*") if p.is_file() and not p.is_symlink()}


def test_a_green_session_leaves_nothing(tmp_path):
    assert left_after(tmp_path, passes=True) == set()


def test_a_failing_session_keeps_the_failed_tests_folder_and_the_shared_ones(tmp_path):
    assert left_after(tmp_path, passes=False) == {"evidence", "mlflow.db"}
