"""The MLflow UI over the project's store: the CLI call, and a server that stops with its caller.

The server runs in its own process group, so stopping it reaches its workers and nothing else, and
Ctrl-C in a terminal reaches only us: we then stop it ourselves.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from catgan.config import load_params, project_root
from catgan.errors import UserError, cli_entry
from catgan.tracking.localserver import check_port, client_host, free_port, stop_group, wait_answering
from catgan.tracking.store import open_client, tracking_uri

_TAIL = 20  # lines of the server's output quoted when it fails


@contextmanager
def serve(store_uri: str, artifacts: Path, port: int | None = None, host: str = "127.0.0.1",
          timeout: float = 60) -> Iterator[str]:
    """Run the UI until the block ends; yields its base URL. A free port is picked when none is given."""
    with _server(store_uri, artifacts, port, host, timeout) as (url, _, _):
        yield url


@contextmanager
def _server(store_uri: str, artifacts: Path, port: int | None, host: str,
            timeout: float) -> Iterator[tuple[str, subprocess.Popen, IO[bytes]]]:
    port = free_port(host) if port is None else check_port(host, port, "the MLflow UI", "UI_PORT")
    # One worker: MLflow's default starts 15 processes and takes twice as long.
    cmd = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store_uri,
           "--default-artifact-root", str(Path(artifacts).resolve()),
           "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Appending: the server's writes must not land where _tail has just moved the shared offset.
    with tempfile.TemporaryFile("a+b") as log:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except FileNotFoundError:
            raise UserError(f"{cmd[0]} not found: mlflow is not installed in this environment; "
                            "run `make setup`") from None
        try:
            url = f"http://{client_host(host)}:{port}"
            wait_answering(f"{url}/health", proc, timeout, f"the MLflow UI ({url})",
                           lambda: "its last output:\n" + _tail(log))
            yield url, proc, log
        finally:
            stop_group(proc.pid)


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-_TAIL:]
    return "\n".join(lines) or "(no output)"


def runs_page(url: str, store_uri: str, experiment: str) -> str:
    """The experiment's runs table. MLflow 3.17's UI opens every experiment in its GenAI view
    unless the URL (or the user's last click on "Model training") says otherwise: it ignores the
    experiment's ``mlflow.experimentKind`` tag."""
    found = open_client(store_uri).get_experiment_by_name(experiment)
    page = f"#/experiments/{found.experiment_id}/runs" if found else "#/experiments"
    return f"{url}/{page}?workflowType=machine_learning"


def _port_from_env() -> int:
    name = "UI_PORT" if os.environ.get("UI_PORT") else "CATGAN_UI_PORT"
    raw = os.environ.get(name) or "5000"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UserError(f"{name}={raw!r} is not a port; set it to a number from 1 to 65535")
    return int(raw)


@cli_entry
def main() -> None:
    """``make ui``: the project's store in the MLflow UI until Ctrl-C."""
    host = os.environ.get("UI_HOST") or "127.0.0.1"
    port = _port_from_env()
    cfg = load_params().tracking
    store = tracking_uri(cfg)
    # A plain `kill` should stop the server too, not orphan it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with _server(store, project_root() / "mlartifacts", port, host, timeout=120) as (url, proc, log):
            print(f"MLflow UI for {store} at {url} (Ctrl-C stops it)", flush=True)
            print(f"the runs of experiment '{cfg.experiment}': "
                  f"{runs_page(url, store, cfg.experiment)}", flush=True)
            code = proc.wait()
            raise UserError(f"the MLflow UI stopped by itself (exit code {code}):\n{_tail(log)}")
    except KeyboardInterrupt:
        print("MLflow UI stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
