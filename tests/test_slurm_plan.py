"""`catgan study --slurm`'s decisions without a cluster: which runs it submits again, what it
refuses before submitting, the page job's command and the experiments a checkout holds.
tests/test_slurm.py runs it against a real SLURM."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catgan.config import TrackingConfig
from catgan.errors import UserError
from catgan.study import slurm
from catgan.study.run import Planned, parse_args

RUNS = [Planned(name, {}) for name in ("s-a-s0", "s-a-s1", "s-b-s0", "s-b-s1")]


def test_only_runs_neither_finished_and_pushed_nor_in_slurm_are_submitted(capsys):
    done = {"s-a-s0": object(), "s-a-s1": object()}  # finished in the tracking store
    pushed = {"s-a-s0", "s-b-s1"}  # experiments of the checkout
    queued = {"s-b-s1": ("pending", "7_3")}
    assert slurm.pick(RUNS, done, pushed, queued) == [1, 2]
    assert capsys.readouterr().out.splitlines() == [
        "study: s-a-s0 finished earlier; kept",
        "study: s-b-s1 is pending in SLURM (7_3); not submitted again"]


def repo(folder: Path) -> Path:
    for args in (["init", "-q"], ["-c", "user.email=t@example.invalid", "-c", "user.name=t",
                                  "commit", "-q", "--allow-empty", "-m", "base"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    return folder


def test_the_experiments_of_a_checkout_are_its_exp_refs_of_any_baseline(tmp_path):
    project = repo(tmp_path)
    head = slurm.git(project, "rev-parse", "HEAD")
    for ref in (f"refs/exps/{head[:2]}/{head[2:]}/s-a-s0", f"refs/exps/ab/{'c' * 38}/s-b-s1",
                "refs/exps/exec/EXEC_HEAD", "refs/exps/celery/stash"):
        slurm.git(project, "update-ref", ref, head)
    assert slurm.experiments(project) == {"s-a-s0", "s-b-s1"}


def test_the_study_logs_where_its_runs_are_told_to_with_s(monkeypatch):
    cfg = slurm.tracking(TrackingConfig(uri="http://a:5000"),
                         ["train.epochs=3", "tracking.uri=http://b:5000"])
    assert cfg.uri == "http://b:5000" and cfg.experiment == "catgan"
    with pytest.raises(UserError, match="tracking.uri holds a password"):
        slurm.tracking(cfg, ["tracking.uri=http://u:secret@b:5000"])


@pytest.fixture
def committed(tmp_path) -> Path:
    project = repo(tmp_path)
    (project / "params.yaml").write_text("x: 1\n")
    slurm.git(project, "add", "params.yaml")
    slurm.git(project, "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "p")
    return project


def test_changes_not_committed_are_refused_the_tasks_run_the_last_commit(committed):
    slurm.check_committed(committed)
    (committed / "params.yaml").write_text("x: 2\n")
    with pytest.raises(UserError) as err:
        slurm.check_committed(committed)
    assert str(err.value) == ("catgan study --slurm: params.yaml has changes that are not "
                              "committed, and the tasks run clones of the last commit; commit "
                              "them (or git stash) and submit again")


@pytest.mark.parametrize("uri", ["", "sqlite:////shared/mlflow.db", "file:///home/me/mlruns",
                                 "/home/me/mlruns"])
def test_a_store_on_this_machine_s_disk_is_refused(tmp_path, monkeypatch, uri):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="is a file on this machine, which the nodes cannot share"):
        slurm.check_store(tmp_path, TrackingConfig(uri=uri))
    slurm.check_store(tmp_path, TrackingConfig(uri="postgresql://db.example/mlflow"))
    slurm.check_store(tmp_path, TrackingConfig(enabled=False))  # `catgan study` says MLflow is needed


def test_the_page_job_runs_page_only_on_the_same_study_without_the_slurm_options(tmp_path):
    args = parse_args(["--name", "s", "--variants", "baseline", "fused", "--seeds", "0", "2",
                       "-S", "train.epochs=3", "--saturating", "--slurm", "-j", "2",
                       "--sbatch-arg=--partition=gpu", "--gpus-per-run", "2"])
    python = tmp_path / "bin" / "python"
    assert slurm.page_command(args, tmp_path / "out", python) == [
        "catgan", "study", "--name", "s", "--arms", "course-baseline", "course-fused", "--seeds",
        "0", "2", "--saturating", "-S", "train.epochs=3", "--out", str(tmp_path / "out"),
        "--page-only"]
    assert args.sbatch_arg == ["--partition=gpu"] and args.gpus_per_run == 2 and args.jobs == 2
