"""The fetch stage with the real kaggle 2.2.5 client against a local Kaggle API (tests/kaggleserver.py):
real HTTP on 127.0.0.1:7777, the real download, unzip and checks, through the stage script."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TINY, merge, write_params
from kaggleserver import KaggleServer, kaggle_zip, serving

DATASET = "spandan2/cats-faces-64x64-for-generative-models"
USER = "c4tg4n-user"
MARK = "c4tg4nSECRET"  # as in tests/faults/test_credentials.py: the planted-secret search
KEY, TOKEN = f"{MARK}-key-5f1e0c93", f"{MARK}-token-9b7d2a41"
ZIP = kaggle_zip()


@pytest.fixture
def server():
    """The local Kaggle API, serving DATASET at version 3; stopped, with its stalls, at teardown."""
    with serving(KaggleServer(USER, KEY, TOKEN, {DATASET: (3, ZIP)})) as api:
        yield api


def kaggle_env(home: Path, **credentials: str) -> dict:
    """The environment of a machine whose only Kaggle is the local one, with ``credentials``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "KAGGLE_")) and "proxy" not in k.lower()}
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "KAGGLE_API_ENVIRONMENT": "TEST", "PYTHONUNBUFFERED": "1",
            **credentials}


def run_fetch(project: Path, env: dict, **data) -> subprocess.CompletedProcess:
    write_params(project, merge(TINY, {"data": {"source": "kaggle", "kaggle_dataset": DATASET,
                                                **data}}))
    return subprocess.run([sys.executable, str(ROOT / "stages" / "fetch.py")], cwd=project,
                          env={**env, "DVC_ROOT": str(project)}, capture_output=True, text=True,
                          timeout=120)


def leaks(project: Path, *procs: subprocess.CompletedProcess) -> list[str]:
    files = [str(p) for p in project.rglob("*") if p.is_file() and MARK.encode() in p.read_bytes()]
    return files + [f"stream of {p.args[-1]}" for p in procs if MARK in p.stdout + p.stderr]


def raw_files(project: Path) -> dict[str, bytes]:
    raw = project / "data" / "raw"
    return {p.relative_to(raw).as_posix(): p.read_bytes() for p in raw.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["env_pair", "kaggle_json", "access_token"])
def test_good_credentials_fetch_the_dataset_and_preprocess_runs(tmp_path, server, where):
    home = tmp_path / "home"
    credentials = {"env_pair": {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY},
                   "kaggle_json": {"KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")},
                   "access_token": {"KAGGLE_API_TOKEN": TOKEN}}[where]
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "kaggle.json").write_text(json.dumps({"username": USER, "key": KEY}))
    (tmp_path / "cfg" / "kaggle.json").chmod(0o600)
    project = tmp_path / "project"
    project.mkdir()
    fetched = run_fetch(project, kaggle_env(home, **credentials))
    assert fetched.returncode == 0, fetched.stderr[-3000:]

    with zipfile.ZipFile(io.BytesIO(ZIP)) as zf:
        expected = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(raw_files(project).pop(".catgan-fetch.json"))
    assert {k: v for k, v in raw_files(project).items() if k != ".catgan-fetch.json"} == expected
    assert manifest == {"source": "kaggle", "dataset": DATASET, "version": 3,
                        "files": len(expected), "renamed": {}}
    calls = [(r["method"], r["path"].split("?")[0]) for r in server.requests]
    signing_in = [("POST", "/api/v1/security.OAuthService/IntrospectToken")] * (where ==
                                                                                 "access_token")
    assert calls == signing_in + [("POST", "/api/v1/datasets.DatasetApiService/GetDataset"),
                                  ("POST", "/api/v1/datasets.DatasetApiService/DownloadDataset"),
                                  ("GET", f"/storage/{DATASET}/3.zip")]
    assert server.requests[-2]["json"]["datasetVersionNumber"] == 3  # the version recorded

    prepared = subprocess.run([sys.executable, str(ROOT / "stages" / "preprocess.py")],
                              cwd=project, env=kaggle_env(home), capture_output=True, text=True,
                              timeout=120)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert json.loads((project / "data/prepared/manifest.json").read_text())["files_used"] == 4
    assert leaks(project, fetched, prepared) == []


# fault -> (params, what the error line must say: docs/troubleshooting.md's "Troubleshooting the Kaggle fetch")
FAULTS = {
    "bad_key": ({}, "Kaggle refused the credentials (HTTP 401"),
    "bad_token": ({}, "did not accept the credentials found (KAGGLE_API_TOKEN)"),
    "403": ({}, "Kaggle refused the credentials (HTTP 403"),
    "unknown_dataset": ({"kaggle_dataset": "spandan2/no-such-cats"}, "no such dataset or version"),
    "unknown_version": ({"kaggle_dataset": DATASET + "/9"}, "no such dataset or version (HTTP 404"),
    "429": ({}, "the server answered HTTP 429"),
    "500": ({}, "the server answered HTTP 500"),
    "drop": ({}, "the download failed (ChunkedEncodingError: ('Connection broken: IncompleteRead"),
    "truncated": ({}, "corrupt or unsupported zip"),
    "corrupt": ({}, "corrupt or unsupported zip"),
    "slow": ({"kaggle_timeout_s": 1}, "no answer from Kaggle for 1 s"),
    "stall": ({"kaggle_timeout_s": 1}, "no answer from Kaggle for 1 s"),
}


# A stalled download waits out its timeout and more: over 4 s, so out of the quick loop.
@pytest.mark.parametrize("fault", [pytest.param(f, marks=pytest.mark.slow) if f == "stall" else f
                                   for f in sorted(FAULTS)])
def test_each_failure_is_one_line_and_keeps_the_previous_data(tmp_path, server, fault):
    data, said = FAULTS[fault]
    server.fault = fault
    credentials = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY + ("-wrong" if fault == "bad_key"
                                                               else "")}
    if fault == "bad_token":
        credentials = {"KAGGLE_API_TOKEN": TOKEN + "-revoked"}
    project = tmp_path / "project"
    (project / "data" / "raw" / "cats").mkdir(parents=True)
    (project / "data" / "raw" / "cats" / "old.jpg").write_bytes(b"a previous fetch")
    started = time.monotonic()
    proc = run_fetch(project, kaggle_env(tmp_path / "home", **credentials), **data)
    elapsed = time.monotonic() - started

    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert said in errors[0] and f"'{data.get('kaggle_dataset', DATASET)}'" in errors[0]
    if fault != "bad_token":
        assert "signed in with KAGGLE_USERNAME/KAGGLE_KEY (user 'c4tg4n-user')" in errors[0]
    if fault in ("slow", "stall"):
        assert "raise data.kaggle_timeout_s in params.yaml" in errors[0] and elapsed < 30
    assert raw_files(project) == {"cats/old.jpg": b"a previous fetch"}
    assert sorted(os.listdir(project / "data")) == ["raw"]  # no temp or partial file left
    assert leaks(project, proc) == []
    assert server.requests, "the client never reached the local Kaggle"
    if fault == "drop":
        assert len(downloads(server)) == 2, "not one retry after the dropped download"


def downloads(server: KaggleServer) -> list[dict]:
    return [r for r in server.requests if r["method"] == "GET"]


@pytest.mark.slow  # over 3.5 s: the quick loop stays under 3 min
def test_one_dropped_download_is_retried_once_and_completes(tmp_path, server):
    server.fault = "drop_once"
    project = tmp_path / "project"
    project.mkdir()
    fetched = run_fetch(project, kaggle_env(tmp_path / "home", KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY))
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    with zipfile.ZipFile(io.BytesIO(ZIP)) as zf:
        assert {k: v for k, v in raw_files(project).items() if k != ".catgan-fetch.json"} == \
            {name: zf.read(name) for name in zf.namelist()}
    first, retry = downloads(server)
    # A resume from the bytes kept; kaggle keeps none of a chunk cut short, so it may be 0.
    assert "Range" not in first["headers"] and retry["headers"]["Range"].startswith("bytes=")
