"""`catgan study` through the real DVC queue and MLflow store, on tiny settings."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from catgan import arms
from conftest import BIN, TINY, clone_project, env, merge, sh

pytestmark = pytest.mark.slow

SETTINGS = merge(TINY, {"model": {"variant": "baseline"}, "train": {"epochs": 2},
                        "tracking": {"enabled": True}})
# The course baseline and the modern recipe: its comma-separated augment must reach the run as one
# value through DVC's -S.
STUDY = [str(BIN / "catgan"), "study", "--name", "tiny", "--seeds", "0", "1", "--arms",
         "course-baseline", "modern"]


def runs_of(project: Path, study: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("catgan")
    return client.search_runs([exp.experiment_id], f"tags.`catgan.study` = '{study}'")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return clone_project(tmp_path_factory.mktemp("study") / "catgan", SETTINGS)


@pytest.fixture(scope="module")
def interrupted_then_resumed(project: Path) -> tuple[str, str]:
    """The study killed while its first run trains, then the same command again."""
    cmd = [*STUDY, "--saturating"]
    # A shell's background job (`make test &`) ignores SIGINT, and so would the study it starts.
    proc = subprocess.Popen(cmd, cwd=project, env=env(), stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and "Running" not in sh(project, "dvc", "queue", "status"):
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    first, _ = proc.communicate(timeout=60)
    second = sh(project, *cmd, timeout=900)
    return first, second


def test_study_runs_each_variant_and_seed_once_as_children_of_one_parent(project,
                                                                         interrupted_then_resumed):
    first, second = interrupted_then_resumed
    assert "study: queued tiny-course-baseline-s0" in first and "study: queued" not in second
    runs = runs_of(project, "tiny")
    parents = [r for r in runs if r.data.tags.get("catgan.role") == "study"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    names = sorted(r.data.tags["dvc_exp_name"] for r in children)
    assert names == ["tiny-course-baseline-s0", "tiny-course-baseline-s1", "tiny-modern-s0",
                     "tiny-modern-s1", "tiny-saturating-course-baseline-s0"]
    for run in children:
        modern = run.data.tags["dvc_exp_name"].startswith("tiny-modern")
        assert run.data.tags["catgan.arm"] == ("modern" if modern else "course-baseline")
        assert run.data.params["train.augment"] == ("color,translation,cutout" if modern else "")
        assert run.data.params["model.spectral_norm"] == str(modern)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.info.run_name for r in children} == set(names)
    shown = sh(project, "dvc", "exp", "show", "--csv", "--no-fetch")
    assert all(name in shown for name in names)


def test_study_folder_and_page_hold_every_run_with_per_epoch_quality(project,
                                                                     interrupted_then_resumed):
    _, second = interrupted_then_resumed
    page = Path(second.strip().splitlines()[-1].removeprefix("study page: "))
    assert page == project / "studies" / "tiny" / "study.html" and page.is_file()
    html = page.read_text()
    assert "modern vs course-baseline" in html and "saturating" in html.lower()
    study = json.loads((page.parent / "study.json").read_text())
    assert study["data"]["images"] == 24 and study["data"]["content_hash"]
    for run_dir in (page.parent / "runs").iterdir():
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["arm"] == ("modern" if "-modern-" in run_dir.name else "course-baseline")
        assert meta["overrides"] == arms.get(meta["arm"]).overrides
        assert meta["epochs"] == 2 and meta["steps"] == 4 and meta["images_seen"] == 16
        assert meta["eval"]["swd"]["swd_avg"] > 0
        lines = (run_dir / "history.csv").read_text().splitlines()
        header = lines[0].split(",")
        assert len(lines) == 3 and all(row.split(",")[header.index("swd_avg")] for row in lines[1:])
        assert sorted(p.name for p in (run_dir / "grids").iterdir()) == [
            "epoch_000.png", "epoch_001.png", "epoch_002.png"]
    parent = next(r for r in runs_of(project, "tiny") if r.data.tags.get("catgan.role") == "study")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert "study.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_per_epoch_quality_reaches_mlflow_with_the_epoch_as_step(project, interrupted_then_resumed):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for run in runs_of(project, "tiny"):
        if run.data.tags.get("catgan.role") != "study":
            history = client.get_metric_history(run.info.run_id, "epoch/swd_avg")
            assert sorted(m.step for m in history) == [1, 2]


def test_study_refuses_an_override_of_what_it_sets_and_unknown_keys(project):
    for bad, message in ((["-S", "model.variant=fused"], "arm course-baseline sets it"),
                         (["--arms", "postmodern"], "known arms: course-baseline"),
                         (["-S", "train.nope=1"], "no such key"),
                         (["--name", "x' or 1=1"], "--name: tracking.study")):
        proc = subprocess.run([*STUDY, *bad], cwd=project, env=env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
