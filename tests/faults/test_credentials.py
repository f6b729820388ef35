"""Kaggle credentials never reach a log, MLflow, a manifest or a report.

Recognisable fake secrets are planted in every place kaggle 2.2.5 reads (KAGGLE_KEY,
KAGGLE_API_TOKEN, $KAGGLE_CONFIG_DIR/kaggle.json, ~/.kaggle/access_token); then the real stages run
with tracking on, fetching from the local Kaggle (tests/kaggleserver.py) with them, and every byte
they wrote or printed is searched for them.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, merge, write_params

DATASET = "spandan2/cats-faces-64x64-for-generative-models"
# The planted token is inactive there, so the client falls back to the planted key.
REFUSED = ("signed in with KAGGLE_USERNAME/KAGGLE_KEY (user 'c4tg4n-user'): Kaggle refused the "
           "credentials (HTTP 401")
MARK = "c4tg4nSECRET"
SECRETS = {
    "KAGGLE_KEY": f"{MARK}-env-key-5f1e0c93",
    "KAGGLE_API_TOKEN": f"{MARK}-env-token-9b7d2a41",
    "kaggle.json": f"{MARK}-json-key-3c8e4f72",
    "access_token": f"{MARK}-home-token-7a6b1d08",
}


@pytest.fixture(scope="module")
def secret_home(tmp_path_factory):
    """A temporary tree holding planted credentials, the environment that points at them, and
    the planted files (the only files allowed to hold a secret)."""
    root = tmp_path_factory.mktemp("credentials")
    home, config = root / "home", root / "kaggle_config"
    (home / ".kaggle").mkdir(parents=True)
    config.mkdir()
    planted = [home / ".kaggle" / "access_token", config / "kaggle.json"]
    planted[0].write_text(SECRETS["access_token"] + "\n")
    planted[1].write_text(json.dumps({"username": "c4tg4n-user", "key": SECRETS["kaggle.json"]}))
    for path in planted:
        path.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "KAGGLE_")) and k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(config), KAGGLE_USERNAME="c4tg4n-user",
               KAGGLE_KEY=SECRETS["KAGGLE_KEY"], KAGGLE_API_TOKEN=SECRETS["KAGGLE_API_TOKEN"],
               PYTHONUNBUFFERED="1")
    return root, env, planted


def run_stage(project: Path, name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=project,
                          capture_output=True, timeout=300, env={**env, "DVC_ROOT": str(project)})


def leaks(root: Path, planted: list[Path], outputs: list[subprocess.CompletedProcess]) -> list[str]:
    """Every file under ``root`` but the planted ones, and every stream, that holds the mark."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    assert set(planted) <= set(files) and all(MARK.encode() in p.read_bytes() for p in planted)
    found = [str(p) for p in files if p not in planted and MARK.encode() in p.read_bytes()]
    for proc in outputs:
        for stream, data in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            if MARK.encode() in data:
                found.append(f"{' '.join(map(str, proc.args[-1:]))} {stream}")
    return found


def local_kaggle(env: dict, username: str, key: str, token: str, images: int = 4):
    """The local Kaggle (tests/kaggleserver.py) serving DATASET, knowing these credentials, and
    ``env`` pointed at it: the stage never reaches the real Kaggle."""
    from kaggleserver import KaggleServer, kaggle_zip, serving

    env = {**{k: v for k, v in env.items() if "proxy" not in k.lower()},
           "KAGGLE_API_ENVIRONMENT": "TEST"}
    return serving(KaggleServer(username, key, token, {DATASET: (1, kaggle_zip(images))})), env


@pytest.mark.slow  # all five stages: out of the quick loop
def test_pipeline_with_tracking_records_no_secret(secret_home):
    """Fetch signs in with the planted token and downloads from the local Kaggle; the other stages
    log the run, and the report and manifests name the Kaggle source."""
    root, env, planted = secret_home
    project = root / "project"
    project.mkdir()
    write_params(project, merge(TINY, {"data": {"source": "kaggle", "kaggle_dataset": DATASET},
                                       "tracking": {"enabled": True}}))
    outputs = []
    server, env = local_kaggle(env, "c4tg4n-user", SECRETS["kaggle.json"],
                               SECRETS["KAGGLE_API_TOKEN"], TINY["data"]["synthetic_count"])
    with server as kaggle:
        for stage in ("fetch", "preprocess", "train", "evaluate", "plot"):
            proc = run_stage(project, stage, env)
            outputs.append(proc)
            assert proc.returncode == 0, f"{stage} failed:\n{proc.stderr.decode()[-3000:]}"
    assert kaggle.requests[0]["json"] == {"token": SECRETS["KAGGLE_API_TOKEN"]}  # it was read
    # The search must have something to search: a tracked run, its artifacts, a report.
    with sqlite3.connect(project / "mlflow.db") as db:
        assert db.execute("select value from params where key = 'data.source'").fetchall() == \
            [("kaggle",)]
    assert any((project / "mlartifacts").rglob("*.png"))
    assert (project / "report" / "index.html").stat().st_size > 0
    assert json.loads((project / "data/raw/.catgan-fetch.json").read_text())["source"] == "kaggle"
    assert (project / "data" / "prepared" / "manifest.json").is_file()
    assert leaks(root, planted, outputs) == []


def test_kaggle_fetch_refused_fails_fast_without_echoing_a_secret(secret_home):
    """A Kaggle that knows none of the planted credentials: one error line, nothing written, and
    no waiting on retries."""
    root, env, planted = secret_home
    project = root / "refused_project"
    project.mkdir()
    write_params(project, merge(TINY, {"data": {"source": "kaggle", "kaggle_dataset": DATASET}}))
    server, env = local_kaggle(env, "someone-else", "other-key", "other-token")
    with server as kaggle:
        started = time.monotonic()
        proc = run_stage(project, "fetch", env)
        elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr.decode()[-3000:]
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and REFUSED in errors[0], stderr
    assert kaggle.requests, "the client never reached the local Kaggle"
    assert elapsed < 30, f"a refusal took {elapsed:.0f} s: the client retried"
    assert [p.name for p in project.rglob("*") if p.is_file()] == ["params.yaml"]
    assert leaks(root, planted, [proc]) == []


def test_kaggle_fetch_from_the_local_kaggle_records_no_secret(secret_home):
    """The real client signs in with the planted token and downloads from tests/kaggleserver.py;
    then fetch fails on a 500. Neither run writes or prints a secret."""
    root, env, planted = secret_home
    project = root / "local_kaggle_project"
    project.mkdir()
    write_params(project, merge(TINY, {"data": {"source": "kaggle", "kaggle_dataset": DATASET}}))
    server, env = local_kaggle(env, "c4tg4n-user", SECRETS["kaggle.json"],
                               SECRETS["KAGGLE_API_TOKEN"])
    with server as kaggle:
        fetched = run_stage(project, "fetch", env)
        kaggle.fault = "500"
        failed = run_stage(project, "fetch", env)
    assert fetched.returncode == 0, fetched.stderr.decode()[-3000:]
    assert failed.returncode == 2 and b"HTTP 500" in failed.stderr, failed.stderr.decode()
    assert kaggle.requests[0]["json"] == {"token": SECRETS["KAGGLE_API_TOKEN"]}  # it was sent
    assert len(list((project / "data" / "raw" / "cats").glob("*.jpg"))) == 4
    assert leaks(root, planted, [fetched, failed]) == []
