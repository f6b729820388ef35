"""An experiment shared between two clones through a git `origin` and a DVC remote, with the real
git and dvc CLIs: once through a local folder, once through an S3 server (moto) on 127.0.0.1."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from catgan.study.compare.from_dvc import experiments, records
from conftest import copy_project, free_port, sh
from test_dvc_pipeline import ran_stages

pytestmark = pytest.mark.slow

EXP = "shared-exp"


def dvc_json(project: Path, *args: str):
    return json.loads(sh(project, "dvc", *args, "--json"))


@pytest.fixture(scope="module")
def clone_a(reproduced, tmp_path_factory) -> dict:
    """Clone A: the session's reproduced baseline (conftest.reproduced) pushed to a bare `origin`,
    then an experiment run in its workspace. What A's experiment produced, to compare B's against."""
    root = tmp_path_factory.mktemp("remote")
    sh(root, "git", "init", "-q", "--bare", "origin.git")
    a = copy_project(reproduced[0], root / "a")
    sh(a, "git", "remote", "add", "origin", str(root / "origin.git"))
    sh(a, "git", "push", "-q", "origin", "HEAD:refs/heads/main")
    sh(root / "origin.git", "git", "symbolic-ref", "HEAD", "refs/heads/main")
    # Untracked, so that B, which has no MLflow store of A's, evaluates it without one too.
    sh(a, "dvc", "exp", "run", "--name", EXP, "-S", "train.seed=1", "-S", "tracking.enabled=false")
    return {"project": a, "origin": root / "origin.git",
            "eval": (a / "metrics/eval.json").read_bytes(),
            "train": json.loads((a / "metrics/train.json").read_text()),
            "generator": (a / "models/generator.pt").read_bytes()}


@pytest.fixture
def moto_server(tmp_path, monkeypatch) -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1, with fake credentials for every client."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        # never the user's real AWS settings
                        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "moto.log").read_text()[-2000:]
                assert time.time() < deadline, "moto_server did not answer within 60 s"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(params=["folder", "s3"])
def remote(request, tmp_path) -> list[list[str]]:
    """`dvc remote` commands that make a fresh remote of this kind the default one."""
    if request.param == "folder":
        return [["add", "--local", "-d", "-f", "folder", str(tmp_path / "dvc-remote")]]
    endpoint = request.getfixturevalue("moto_server")
    import boto3  # dvc[s3] brings it; DVC does not create buckets

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="catgan")
    return [["add", "--local", "-d", "-f", "s3", "s3://catgan/dvc"],
            ["modify", "--local", "s3", "endpointurl", endpoint]]


def test_an_experiment_travels_to_another_clone_and_its_models_come_back_without_training(
        clone_a, remote, tmp_path):
    a = clone_a["project"]
    for command in remote:
        sh(a, "dvc", "remote", *command)
    sh(a, "dvc", "push", "--all-commits")  # the baseline, for B's own workspace
    sh(a, "dvc", "exp", "push", "origin", EXP)

    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(clone_a["origin"]), str(b))
    for command in remote:
        sh(b, "dvc", "remote", *command)
    sh(b, "dvc", "pull")
    sh(b, "dvc", "exp", "pull", "origin", EXP)

    [shared] = records(experiments(dvc_json(b, "exp", "show")), "clone B")  # catgan compare's reader
    assert (shared.name, shared.group, shared.seed) == (EXP, "baseline", 1)
    assert shared.metrics["train.loss_d"] == clone_a["train"]["loss_d"]
    assert shared.metrics["eval.swd.swd_avg"] == json.loads(clone_a["eval"])["swd"]["swd_avg"]

    diff = dvc_json(b, "metrics", "diff", EXP)  # the experiment against B's baseline workspace
    swd = diff["metrics/eval.json"]["swd.swd_avg"]
    assert swd["old"] == shared.metrics["eval.swd.swd_avg"] and swd["diff"] != 0

    sh(b, "dvc", "exp", "apply", EXP)
    sh(b, "dvc", "pull")
    assert (b / "models/generator.pt").read_bytes() == clone_a["generator"]
    assert dvc_json(b, "status") == {}, "B would train again"
    assert not (b / "checkpoints").exists(), "train ran on B"

    out = sh(b, "dvc", "repro", "--force", "--single-item", "evaluate")
    assert ran_stages(out) == ["evaluate"]
    assert (b / "metrics/eval.json").read_bytes() == clone_a["eval"]
    assert not (b / "checkpoints").exists()
