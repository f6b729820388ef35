"""kill -9 of the real fetch and preprocess stages midway through their output.

No partial data/raw or data/prepared is ever visible: a first run leaves none, a re-run leaves the
old complete one, and the next run's output equals an uninterrupted run's, byte for byte, with the
killed run's temp folder swept away.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from stagerun import kill9, make_project, ok, run, start, tree_bytes, wait_until

COUNT = 600  # synthetic images: about 2 s to draw and 0.5 s to preprocess on one core
SETTINGS = {"data": {"synthetic_count": COUNT}}


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """fetch and preprocess, uninterrupted."""
    project = make_project(tmp_path_factory.mktemp("whole"), SETTINGS)
    ok(run(project, "fetch"))
    ok(run(project, "preprocess"))
    return project


def temps(project: Path, name: str) -> list[Path]:
    return sorted((project / "data").glob(f".{name}.*.tmp"))


def kill_when(project: Path, stage: str, condition) -> None:
    """Start ``stage`` and kill -9 it as soon as ``condition(project, log)`` holds."""
    log = project / f"{stage}.log"
    proc = start(project, stage, log)
    reached = wait_until(lambda: condition(project, log), proc)
    code = kill9(proc)
    assert reached and code == -9, f"{stage} was not killed midway (exit {code}): {log.read_text()[-2000:]}"


def fetch_third_done(project: Path, log: Path) -> bool:
    return any(len(list(tmp.iterdir())) >= COUNT // 3 for tmp in temps(project, "raw"))


def preprocess_third_done(project: Path, log: Path) -> bool:
    counts = re.findall(rb"(\d+)/%d \[" % COUNT, log.read_bytes())
    return bool(counts) and int(counts[-1]) >= COUNT // 3


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_fetch_killed_midway_leaves_no_partial_raw_folder_and_reruns_identically(whole, tmp_path):
    cut = make_project(tmp_path, SETTINGS)
    kill_when(cut, "fetch", fetch_third_done)
    assert not (cut / "data/raw").exists()
    assert temps(cut, "raw")  # the half-written folder exists, hidden, under a temp name

    ok(run(cut, "fetch"))
    assert tree_bytes(cut / "data/raw") == tree_bytes(whole / "data/raw")
    assert not temps(cut, "raw")  # the killed run's temp was swept

    kill_when(cut, "fetch", fetch_third_done)  # killed while replacing a complete folder
    assert tree_bytes(cut / "data/raw") == tree_bytes(whole / "data/raw")


def test_preprocess_killed_midway_leaves_no_partial_array_and_reruns_identically(whole, tmp_path):
    cut = make_project(tmp_path, SETTINGS)
    shutil.copytree(whole / "data/raw", cut / "data/raw")
    kill_when(cut, "preprocess", preprocess_third_done)
    assert not (cut / "data/prepared").exists()
    assert any((tmp / "staging.npy").exists() for tmp in temps(cut, "prepared"))

    ok(run(cut, "preprocess"))
    expected = tree_bytes(whole / "data/prepared")
    assert sorted(expected) == ["images.npy", "manifest.json"]
    assert tree_bytes(cut / "data/prepared") == expected
    assert not temps(cut, "prepared")

    kill_when(cut, "preprocess", preprocess_third_done)
    assert tree_bytes(cut / "data/prepared") == expected
