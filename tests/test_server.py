"""`make server`'s MLflow server (PostgreSQL store, served artifacts) taking two queued DVC
experiments at once over HTTP, with a planted password in the tracking URI."""
from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mlflowserver import (MARK, artifacts, assert_complete, files_holding_mark, search_runs,
                          secret_uri, team_server)

from conftest import ROOT, TINY, clone_project, env, merge
from dvcqueue import run_queue

pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH = 3, 2
SETTINGS = merge(TINY, {"train": {"epochs": EPOCHS}, "tracking": {"enabled": True}})


def cli(project: Path, uri: str, *cmd: str, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=project, env={**env(), "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert MARK not in proc.stdout + proc.stderr, f"{' '.join(cmd)} printed the password"
    return proc.stdout


def test_two_experiments_queued_with_j2_land_whole_on_the_server_and_no_password_leaks(tmp_path):
    project = clone_project(tmp_path / "catgan", SETTINGS)
    with team_server() as (url, folder):
        assert stat.S_IMODE((folder / "pgpass").stat().st_mode) == 0o600  # the database password
        uri = secret_uri(url)
        cli(project, uri, "dvc", "exp", "run", "--queue", "-S", "model.variant=baseline,fused")
        status = run_queue(project, {**env(), "MLFLOW_TRACKING_URI": uri})
        assert status.count("Success") == 2 and MARK not in status, status

        runs = search_runs(url)
        params = [{p["key"]: p["value"] for p in run["data"]["params"]} for run in runs]
        assert sorted(p["model.variant"] for p in params) == ["baseline", "fused"]
        assert all(MARK not in value for p in params for value in p.values())
        for run in runs:
            run_id = run["info"]["run_id"]
            assert_complete(url, run_id, EPOCHS, EPOCHS * STEPS_PER_EPOCH, evaluated=True)
            assert {a["path"] for a in artifacts(url, run_id, "report")} >= {"report/index.html"}
            assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
        # The experiments' outputs and logs, the DVC cache, and the server's store and artifacts.
        # The copied project source is left out: its tests plant the mark.
        source = frozenset(project / f for f in cli(project, uri, "git", "ls-files").splitlines())
        assert files_holding_mark(project, folder, skip=source) == []
        shown = cli(project, uri, "dvc", "exp", "show", "--no-fetch", "--csv")  # checked by cli()
        assert "fused" in shown and "baseline" in shown


def test_server_start_fails_in_one_line_on_a_taken_port(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "catgan.tracking.server", "start", "--port", str(port),
                               "--dir", str(tmp_path / "server")], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (f"error: cannot serve the MLflow server on 127.0.0.1:{port} "
                                   "(Address already in use); stop what uses that port or pick "
                                   "another with SERVER_PORT=<port>")
    assert not (tmp_path / "server").exists()
