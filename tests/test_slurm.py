"""`catgan study --slurm` and the multi-node recipe against a real SLURM (tests/slurmcluster.py:
munged, slurmctld and slurmd on 127.0.0.1) and the team server with logins (tests/mlflowserver.py).

A study of 2 arms x 2 seeds goes in as one job array. Right after its first epoch's checkpoint one
task is requeued (as preemption does) and another cancelled; the first resumes by itself, the
same command run again submits only the second, and both end with the numbers of runs never
interrupted. Every run is then a finished child run in the team server and an experiment in the
checkout, and the page job has built the page. Bad input is one line before anything is submitted.
Two SLURM tasks of slurm/multinode-train.sh train as two nodes the weights of one node of two.
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from mlflowserver import artifacts, search_runs, secret_uri, team_server
from slurmcluster import Cluster, slurm_cluster
from test_distributed import launch_command
from test_server_auth import refused
from test_stages import stage_env

from catgan.study import arms
from catgan.tracking import auth as serverauth
from conftest import BIN, TINY, clone_project, copy_project, env, free_port, merge, sh, \
    write_params

pytestmark = pytest.mark.slow

EPOCHS = 3  # the kills land after epoch 1's checkpoint: two epochs to spare
ARGS = ["--arms", "course-baseline", "course-fused", "--seeds", "0", "1",
        "-S", f"train.epochs={EPOCHS}", "--slurm", "--gpus-per-run", "0"]
NAMES = ["tiny-course-baseline-s0", "tiny-course-baseline-s1", "tiny-course-fused-s0",
         "tiny-course-fused-s1"]
REQUEUED, CANCELLED = 0, 3  # array indices: task 0 starts at once, task 3 waits for a CPU
SETTINGS = merge(TINY, {"tracking": {"enabled": True}})  # the server comes from the environment
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture(scope="module")
def team():
    """The team server with logins, and a teammate's environment for it: the URI and their user
    and password, as docs/sharing-and-scaling.md has them set."""
    with team_server(auth=True) as (url, folder):
        user, password = serverauth.read_credentials(
            serverauth.add_user(folder, "alice", lambda: url, "catgan"))
        yield url, {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": user,
                    "MLFLOW_TRACKING_PASSWORD": password}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The user's checkout: committed, its data prepared once, as docs/study.md asks."""
    project = clone_project(tmp_path_factory.mktemp("slurm-study") / "catgan", SETTINGS)
    sh(project, "dvc", "repro", "preprocess")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "data")
    return project


def study(project: Path, cluster: Cluster, environment: dict, *args: str,
          name: str = "tiny") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "catgan"), "study", "--name", name, *args], cwd=project,
                          env={**env(), **cluster.env, **environment}, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("case", ["no sbatch", "unknown arm", "local store", "refused login",
                                  "unknown partition"])
def test_bad_input_is_one_line_and_nothing_is_submitted(case, checkout, cluster, team):
    url, server = team
    environment, args = dict(server), list(ARGS)
    if case == "no sbatch":
        environment["PATH"] = str(BIN)
    elif case == "unknown arm":
        args[args.index("course-fused")] = "postmodern"
    elif case == "local store":
        environment = {}
    elif case == "unknown partition":
        args.append("--sbatch-arg=--partition=nope")
    else:
        environment["MLFLOW_TRACKING_PASSWORD"] = "not-alice-s-password"
    line = refused(study(checkout, cluster, environment, *args, name="bad"))
    assert line == "error: " + {
        "no sbatch": "catgan study --slurm: no sbatch on PATH; run it where SLURM's commands are, "
                     "on a login node of the cluster (some need `module load slurm`)",
        "unknown arm": f"unknown arm 'postmodern'; known arms: {', '.join(arms.ARMS)}",
        "local store": f"catgan study --slurm: the tracking store sqlite:///{checkout}/mlflow.db is "
                       "a file on this machine, which the nodes cannot share; name a tracking "
                       "server they all reach: export MLFLOW_TRACKING_URI=http://host:5000 (`make "
                       "server` starts one, docs/sharing-and-scaling.md), or -S "
                       "tracking.uri=http://host:5000",
        "refused login": f"MLflow tracking server {url} refused the user and password given (HTTP "
                         "401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the "
                         "ones in the credentials file the server's admin made for you (`make "
                         "server-user NAME=<you>`), or put that file at ~/.mlflow/credentials",
        "unknown partition": "sbatch refused the options: allocation failure: Invalid "
                             "partition name specified; check the --sbatch-arg values",
    }[case]
    assert cluster.jobs() == []
    assert not (checkout / "studies" / "bad").exists() and not (checkout / "mlflow.db").exists()


@dataclass
class Study:
    first: subprocess.CompletedProcess
    again: subprocess.CompletedProcess  # the same command, right after CANCELLED's cancel
    arrays: tuple[str, str]  # the array job of each submission
    logs: Path
    reference: Path  # the requeued run's params trained without interruption


def checkpoint(project: Path) -> Path | None:
    """The requeued task's checkpoint: course-baseline (variant baseline), seed 0."""
    return next(project.glob("checkpoints/baseline-seed0-*/last.pt"), None)


def requeue_after_first_epoch(project: Path, cluster: Cluster, task: str) -> None:
    """``scontrol requeue`` of ``task`` (what preemption does) once its first epoch's
    checkpoint is written."""
    deadline = time.monotonic() + TIMEOUT_S
    while not checkpoint(project) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint(project), f"no checkpoint of {task} in {TIMEOUT_S} s"
    cluster.run("scontrol", "requeue", task)


def submitted_array(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.search(r"as SLURM job array (\d+)", proc.stdout)[1]


def uninterrupted(project: Path, overrides: dict[str, str], folder: Path) -> subprocess.Popen:
    """The train stage, started on a run's params (tracking off) in a folder of its own that
    reads the checkout's prepared data: it runs to its end without interruption."""
    folder.mkdir()
    params = yaml.safe_load((project / "params.yaml").read_text())
    settings = arms.nested({key: yaml.safe_load(value) for key, value in overrides.items()})
    write_params(folder, merge(params, merge(settings, {"tracking": {"enabled": False}})))
    (folder / "data").symlink_to(project / "data")
    return subprocess.Popen(launch_command(1), cwd=folder, env=stage_env(folder),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def slurm_study(checkout, cluster, team, tmp_path_factory) -> Study:
    """The study submitted; CANCELLED cancelled while it waits and the same command run again at
    once; REQUEUED requeued after its first epoch; then every job waited for."""
    _, server = team
    started = time.monotonic()
    first = study(checkout, cluster, server, *ARGS)
    array = submitted_array(first)
    requeue = threading.Thread(target=requeue_after_first_epoch,
                               args=(checkout, cluster, f"{array}_{REQUEUED}"))
    requeue.start()
    cluster.run("scancel", f"{array}_{CANCELLED}")
    again = study(checkout, cluster, server, *ARGS)
    plan = json.loads((checkout / "studies/tiny/slurm/submit-1.json").read_text())
    reference = tmp_path_factory.mktemp("uninterrupted") / "run"
    training = uninterrupted(checkout, plan["runs"][REQUEUED]["overrides"], reference)
    requeue.join()
    cluster.wait_idle(TIMEOUT_S)
    print(f"the SLURM study took {time.monotonic() - started:.0f} s")
    assert training.wait(TIMEOUT_S) == 0, training.stderr.read()[-3000:]
    return Study(first, again, (array, submitted_array(again)),
                 checkout / "studies" / "tiny" / "slurm" / "logs", reference)


def test_every_run_is_a_finished_child_of_the_study_run_in_the_team_server(slurm_study, team):
    url, server = team
    runs = search_runs(secret_uri(url, server["MLFLOW_TRACKING_USERNAME"],
                                  server["MLFLOW_TRACKING_PASSWORD"]))
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    parents = [run for run, tag in zip(runs, tags) if tag.get("catgan.role") == "study"
               and tag.get("catgan.study") == "tiny"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    children = [(tag["dvc_exp_name"], run, tag) for run, tag in zip(runs, tags)
                if tag.get("mlflow.parentRunId") == parents[0]["info"]["run_id"]]
    # One run each: the requeued task went on logging into the run it started.
    assert sorted(name for name, _, _ in children) == NAMES
    for name, run, tag in children:
        assert run["info"]["status"] == "FINISHED"
        assert tag["catgan.arm"] == name.removeprefix("tiny-").rsplit("-", 1)[0]
    resumed = [name for name, _, tag in children if tag["catgan.resumed"] == "true"]
    assert resumed == [NAMES[REQUEUED]]


def test_every_run_is_an_experiment_of_the_checkout_with_its_params_and_metrics(slurm_study,
                                                                                 checkout):
    shown = csv.DictReader(io.StringIO(sh(checkout, "dvc", "exp", "show", "--csv", "--no-fetch")))
    by_name = {row["Experiment"]: row for row in shown if row["Experiment"]}
    assert sorted(by_name) == NAMES
    for name, row in by_name.items():
        assert row["train.seed"] == name[-1] and row["train.epochs"] == str(EPOCHS)
        assert row["model.variant"] == ("fused" if "fused" in name else "baseline")
        assert float(row["swd.swd_avg"]) > 0 and row["tracking.study"] == "tiny"
    compared = sh(checkout, str(BIN / "catgan"), "compare", "--out", str(checkout.parent / "cmp"))
    assert "course-fused - course-baseline" in compared and "4 runs." in compared, compared


def test_one_page_job_builds_the_page_from_the_team_server_after_every_run(slurm_study, checkout,
                                                                          team):
    page = checkout / "studies" / "tiny" / "study.html"
    assert page.is_file() and "course-fused vs course-baseline" in page.read_text()
    # The first submission's page job was cancelled by the second, which waits for both arrays.
    logs = list(slurm_study.logs.glob("page-*.out"))
    assert len(logs) == 1 and f"study page: {page}\n" in logs[0].read_text()
    url, server = team
    parent = next(run for run in search_runs(secret_uri(
        url, server["MLFLOW_TRACKING_USERNAME"], server["MLFLOW_TRACKING_PASSWORD"]))
        if run["info"]["run_name"] == "study-tiny")
    assert "study.html" in {a["path"] for a in artifacts(secret_uri(
        url, server["MLFLOW_TRACKING_USERNAME"], server["MLFLOW_TRACKING_PASSWORD"]),
        parent["info"]["run_id"])}


def test_the_same_command_again_submits_only_the_run_neither_done_nor_in_slurm(slurm_study):
    out = slurm_study.again.stdout
    waiting = re.findall(r"study: (\S+) is (?:running|pending) in SLURM \(\d+_\d\); not "
                         r"submitted again", out)
    assert sorted(waiting) == [n for i, n in enumerate(NAMES) if i != CANCELLED], out
    array = slurm_study.arrays[1]
    assert f"submitted 1 run(s) as SLURM job array {array}" in out, out
    assert f"  {array}_{CANCELLED}  {NAMES[CANCELLED]}\n" in out, out
    assert re.search(r"cancelled the earlier page job \d+", out), out


def test_the_requeued_task_resumes_and_ends_as_an_uninterrupted_run(slurm_study, checkout):
    log = (slurm_study.logs / f"{slurm_study.arrays[0]}_{REQUEUED}.out").read_text()
    assert "attempt 1," in log and "attempt 2," in log, log[-3000:]
    resumed = re.search(r"resuming from \S+ at epoch (\d+)", log)
    assert resumed, f"the requeued task trained from scratch:\n{log[-3000:]}"
    assert 1 <= int(resumed[1]) < EPOCHS, f"resumed at epoch {resumed[1]}: the requeue missed the run"
    rev = experiment_rev(checkout, NAMES[REQUEUED])
    reference = slurm_study.reference
    assert experiment_file(checkout, rev, "metrics/history.csv") == \
        (reference / "metrics" / "history.csv").read_bytes()
    for net in ("generator.pt", "discriminator.pt"):
        resumed = torch.load(io.BytesIO(experiment_file(checkout, rev, f"models/{net}")),
                             weights_only=True)
        plain = torch.load(reference / "models" / net, weights_only=True)
        assert resumed.keys() == plain.keys(), net
        assert all(torch.equal(value, plain[key]) for key, value in resumed.items()), net


def experiment_rev(project: Path, name: str) -> str:
    refs = sh(project, "git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    return next(line.split()[0] for line in refs.splitlines() if line.endswith(f"/{name}"))


def experiment_file(project: Path, rev: str, path: str) -> bytes:
    import dvc.api

    return dvc.api.read(path, repo=str(project), rev=rev, mode="rb")


def test_task_names_say_study_arm_and_seed(slurm_study, cluster):
    names = {record["Name"] for record in cluster.completed()
             if record.get("ArrayJobId") in slurm_study.arrays}
    assert set(NAMES) <= names, names


def test_no_file_and_no_job_script_holds_the_password(slurm_study, checkout, team):
    password = team[1]["MLFLOW_TRACKING_PASSWORD"].encode()
    leaks = [p for p in checkout.rglob("*") if p.is_file() and not p.is_symlink()
             and password in p.read_bytes()]
    assert leaks == []
    assert list((checkout / "studies" / "tiny" / "slurm" / "work").iterdir()) == []


def test_two_slurm_tasks_as_two_nodes_train_the_weights_of_one_node_of_two(checkout, cluster,
                                                                           tmp_path):
    nodes = copy_project(checkout, tmp_path / "nodes")
    params = yaml.safe_load((nodes / "params.yaml").read_text())
    write_params(nodes, merge(params, {"train": {"nproc": 1}, "tracking": {"enabled": False}}))
    one = tmp_path / "one"  # one node of two processes, meanwhile
    one.mkdir()
    write_params(one, merge(params, {"train": {"nproc": 2}, "tracking": {"enabled": False}}))
    (one / "data").symlink_to(nodes / "data")
    single = subprocess.Popen(launch_command(2), cwd=one, env=stage_env(one),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "nodes.out"
    proc = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2",
                           f"--output={log}", "slurm/multinode-train.sh"],
                          cwd=nodes, env={**env(), **cluster.env, "PET_MASTER_PORT": str(free_port())},
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, log.read_text()[-3000:] if log.exists() else proc.stderr
    assert single.wait(TIMEOUT_S) == 0, single.stderr.read()[-3000:]
    for name in ("generator.pt", "discriminator.pt"):
        a, b = (torch.load(folder / "models" / name, weights_only=True) for folder in (one, nodes))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (one / "metrics/history.csv").read_bytes() == (nodes / "metrics/history.csv").read_bytes()
    assert "Running stage 'train'" in log.read_text()  # task 0 trained through DVC
