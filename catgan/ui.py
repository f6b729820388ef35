"""The MLflow UI over the project's store: the CLI call, and a server that stops with its caller.

The server runs in its own process group, so stopping it reaches its workers and nothing else, and
Ctrl-C in a terminal reaches only us: we then stop it ourselves.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from catgan.config import load_params, project_root
from catgan.errors import UserError, cli_entry
from catgan.mlflowstore import tracking_uri

_STOP_TIMEOUT = 10.0
_TAIL = 20  # lines of the server's output quoted when it fails


def ui_command(store_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` call. One worker: MLflow's default starts 15 processes and takes twice as long."""
    mlflow = Path(sys.executable).parent / "mlflow"
    return [str(mlflow), "ui", "--backend-store-uri", store_uri,
            "--default-artifact-root", str(Path(artifacts).resolve()),
            "--host", host, "--port", str(port), "--workers", "1"]


@contextmanager
def serve(store_uri: str, artifacts: Path, port: int | None = None, host: str = "127.0.0.1",
          timeout: float = 60) -> Iterator[str]:
    """Run the UI until the block ends; yields its base URL. A free port is picked when none is given."""
    with _server(store_uri, artifacts, port, host, timeout) as (url, _, _):
        yield url


@contextmanager
def _server(store_uri: str, artifacts: Path, port: int | None, host: str,
            timeout: float) -> Iterator[tuple[str, subprocess.Popen, IO[bytes]]]:
    port = _free_port(host) if port is None else _check_port(host, port)
    cmd = ui_command(store_uri, artifacts, host, port)
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
            url = f"http://{_client_host(host)}:{port}"
            _wait_healthy(url, proc, log, timeout)
            yield url, proc, log
        finally:
            _stop(proc)


def _free_port(host: str) -> int:
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _check_port(host: str, port: int, what: str = "the MLflow UI", var: str = "UI_PORT") -> int:
    """Fail now rather than after the server's slow start: on a taken port it even exits with 0."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot serve {what} on {host}:{port} ({err.strerror}); stop what "
                            f"uses that port or pick another with {var}=<port>") from None
    return port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _client_host(host: str) -> str:
    """Where to reach a server bound to ``host``: a wildcard address is reachable on loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if ":" in host:
        return "[::1]" if host == "::" else f"[{host}]"
    return host


def _wait_healthy(url: str, proc: subprocess.Popen, log: IO[bytes], timeout: float) -> None:
    # No proxy: a proxy taken from the environment would not reach our loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI ({url}) exited with code {proc.returncode} while starting:\n"
                            f"{_tail(log)}")
        try:
            with opener.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UserError(f"the MLflow UI ({url}) did not answer within {timeout:.0f} s; its last output:\n"
                    f"{_tail(log)}")


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-_TAIL:]
    return "\n".join(lines) or "(no output)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after a grace period."""
    group = proc.pid  # start_new_session made it the leader of its own group
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _group_alive(proc, group):
        if time.monotonic() > deadline:
            _signal_group(group, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.1)


def _group_alive(proc: subprocess.Popen, group: int) -> bool:
    # Reaping the leader first: an exited but unreaped leader would still count as a member.
    proc.poll()
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def runs_page(url: str, store_uri: str, experiment: str) -> str:
    """The experiment's runs table. MLflow 3.17's UI opens every experiment in its GenAI view
    unless the URL (or the user's last click on "Model training") says otherwise: it ignores the
    experiment's ``mlflow.experimentKind`` tag."""
    from catgan.mlflowstore import open_client

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
    store = tracking_uri(load_params().tracking)
    # A plain `kill` should stop the server too, not orphan it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with _server(store, project_root() / "mlartifacts", port, host, timeout=120) as (url, proc, log):
            print(f"MLflow UI for {store} at {url} (Ctrl-C stops it)", flush=True)
            experiment = load_params().tracking.experiment
            print(f"the runs of experiment '{experiment}': {runs_page(url, store, experiment)}",
                  flush=True)
            code = proc.wait()
            raise UserError(f"the MLflow UI stopped by itself (exit code {code}):\n{_tail(log)}")
    except KeyboardInterrupt:
        print("MLflow UI stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
