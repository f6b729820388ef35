"""`catgan study` through the real DVC queue and MLflow store, on tiny settings."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from catgan.study import arms, queue
from conftest import BIN, TINY, clone_project, env, merge, sh

pytestmark = pytest.mark.slow

SETTINGS = merge(TINY, {"model": {"variant": "baseline"}, "train": {"epochs": 2},
                        "tracking": {"enabled": True}})
# The course baseline and the modern recipe: its comma-separated augment must reach the run as one
# value through DVC's -S.
STUDY = [str(BIN / "catgan"), "study", "--name", "tiny", "--arms", "course-baseline", "modern",
         "--seeds", "0", "1"]


def runs_of(project: Path, study: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("catgan")
    return client.search_runs([exp.experiment_id], f"tags.`catgan.study` = '{study}'")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return clone_project(tmp_path_factory.mktemp("study") / "catgan", SETTINGS)


NAMES = ["tiny-course-baseline-s0", "tiny-course-baseline-s1", "tiny-modern-s0", "tiny-modern-s1",
         "tiny-saturating-course-baseline-s0"]


@dataclass
class Interrupted:
    first: subprocess.CompletedProcess  # the study killed while its first run trains
    second: str  # what the same command, run again with -j 2, printed
    most_running: int  # the most experiments `dvc queue status` showed running during the second


def resume(project: Path, cmd: list[str]) -> tuple[str, int]:
    """``cmd`` run to its end, and the most experiments DVC's queue ran at once meanwhile."""
    out, err = project.parent / "resumed.out", project.parent / "resumed.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=project, env=env(), stdout=stdout, stderr=stderr)
    most, deadline = 0, time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        most = max(most, list(queue.status(project, env()).values()).count("Running"))
        time.sleep(1)
    assert proc.wait(timeout=max(1, deadline - time.time())) == 0, err.read_text()[-3000:]
    return out.read_text(), most


@pytest.fixture(scope="module")
def interrupted_then_resumed(project: Path) -> Interrupted:
    """The study killed while its first run trains, then the same command again, two at a time."""
    cmd = [*STUDY, "--saturating"]
    # A shell's background job (`make test &`) ignores SIGINT, and so would the study it starts.
    proc = subprocess.Popen(cmd, cwd=project, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and "Running" not in queue.status(project, env()).values():
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    second, most_running = resume(project, [*cmd, "-j", "2"])
    return Interrupted(subprocess.CompletedProcess(cmd, proc.returncode, out, err), second,
                       most_running)


def test_study_runs_each_variant_and_seed_once_as_children_of_one_parent(project,
                                                                         interrupted_then_resumed):
    first, second = interrupted_then_resumed.first, interrupted_then_resumed.second
    assert first.returncode == 2 and "Traceback" not in first.stderr, first.stderr[-3000:]
    assert first.stderr.strip().splitlines()[-1].startswith("error: interrupted; 5 run(s) go on "
                                                             "in DVC's queue"), first.stderr
    assert "study: queued tiny-course-baseline-s0" in first.stdout and "study: queued" not in second
    runs = runs_of(project, "tiny")
    parents = [r for r in runs if r.data.tags.get("catgan.role") == "study"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    names = sorted(r.data.tags["dvc_exp_name"] for r in children)
    assert names == NAMES
    for run in children:
        modern = run.data.tags["dvc_exp_name"].startswith("tiny-modern")
        assert run.data.tags["catgan.arm"] == ("modern" if modern else "course-baseline")
        assert run.data.params["train.augment"] == ("color,translation,cutout" if modern else "")
        assert run.data.params["model.d_norm"] == ("spectral" if modern else "batchnorm")
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.info.run_name for r in children} == set(names)
    shown = sh(project, "dvc", "exp", "show", "--csv", "--no-fetch")
    assert all(name in shown for name in names)


def test_resumed_with_j2_it_runs_two_experiments_at_once(interrupted_then_resumed):
    # DVC's queue, not MLflow's run times: two experiments at once spend much of their time in
    # DVC's own setup and collection, and their pipelines can take turns.
    assert interrupted_then_resumed.most_running == 2


def test_study_folder_and_page_hold_every_run_with_per_epoch_quality(project,
                                                                     interrupted_then_resumed):
    page = Path(interrupted_then_resumed.second.strip().splitlines()[-1]
                .removeprefix("study page: "))
    assert page == project / "studies" / "tiny" / "study.html" and page.is_file()
    html = page.read_text()
    assert "modern vs course-baseline" in html
    assert "The saturating run is missing" not in html
    study = json.loads((page.parent / "study.json").read_text())
    assert study["data"]["images"] == 24 and study["data"]["content_hash"]
    assert sorted(p.name for p in (page.parent / "runs").iterdir()) == NAMES
    for run_dir in (page.parent / "runs").iterdir():
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["kind"] == ("saturating" if "saturating" in run_dir.name else "study")
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


def test_page_only_queues_nothing_and_builds_the_page_from_the_store(project,
                                                                    interrupted_then_resumed,
                                                                    tmp_path):
    out = sh(project, *STUDY, "--saturating", "--page-only", "--out", str(tmp_path / "again"))
    assert "study: " not in out, out  # neither queued nor waited for nor kept a run
    assert out.strip().splitlines()[-1] == f"study page: {tmp_path / 'again' / 'study.html'}"
    assert sorted(p.name for p in (tmp_path / "again" / "runs").iterdir()) == NAMES
    proc = subprocess.run([*STUDY, "2", "--page-only"], cwd=project, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: the MLflow store holds no finished run for tiny-course-baseline-s2, tiny-modern-s2; run "
        "the same command without --page-only to train them"), proc.stderr


def test_study_refuses_an_override_of_what_it_sets_and_unknown_keys(project):
    for bad, message in ((["-S", "model.variant=fused"], "arm course-baseline sets it"),
                         (["--arms", "postmodern"], "known arms: course-baseline"),
                         (["-S", "train.nope=1"], "no such key"),
                         (["--name", "x' or 1=1"], "--name: tracking.study")):
        proc = subprocess.run([*STUDY, *bad], cwd=project, env=env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
