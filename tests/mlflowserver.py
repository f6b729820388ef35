"""The team server of `make server` (catgan.tracking.server) for the tests, and its REST API read plainly."""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port

from catgan.tracking import server
from catgan.tracking.localserver import group_alive
from catgan.training.outputs import EPOCH_KEY, STEP_KEY

MARK = "c4tg4nSECRET"
PASSWORD = f"{MARK}-tracking-password-4e1f9a27"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


@contextmanager
def team_server(auth: bool | None = None) -> Iterator[tuple[str, Path]]:
    """PostgreSQL and the MLflow server started as `make server` starts them (``auth``: as
    SERVER_AUTH), on a free port, in a folder of their own; then stopped, and checked gone. Yields
    the URL and the folder."""
    # Not pytest's tmp_path: as root, PostgreSQL runs as user postgres, which cannot enter it (0700).
    folder = Path(tempfile.mkdtemp(prefix="catgan-server-"))
    folder.chmod(0o755)
    try:
        url = server.start(folder, port=free_port(), workers=2, auth=auth)
        mlflow_pid, pg_pid = mlflow_pid_of(folder), postmaster_pid(folder)
        try:
            yield url, folder
        finally:
            server.stop(folder)
        # pg_ctl stop returns once the postmaster removed its pid file, which it does just
        # before it exits: give the exit itself a moment.
        deadline = time.monotonic() + 10
        while (left := survivors(folder, mlflow=mlflow_pid, postgres=pg_pid)) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still alive after server.stop: {left}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def survivors(folder: Path, **pids: int) -> dict[str, str]:
    """Name -> command line of each of ``pids``, and of the pid file's postmaster, still alive."""
    pids["postmaster.pid"] = postmaster_pid(folder)
    left = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):  # gone between the two looks
            if alive(pid):
                left[name] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return left


def mlflow_pid_of(folder: Path) -> int:
    return int((folder / "mlflow.pid").read_text())


def postmaster_pid(folder: Path) -> int:
    pidfile = folder / "postgres" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.is_file() else 0


def alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def kill_mlflow(folder: Path) -> None:
    """SIGKILL the MLflow server's process group by its pid file, as a crash would; PostgreSQL stays."""
    pid = mlflow_pid_of(folder)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not group_alive(pid):  # which reaps it: this test process started it
            return
        time.sleep(0.1)
    raise AssertionError(f"the MLflow server's group {pid} outlived SIGKILL")


def raw(url: str, method: str, path: str, login: tuple[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, bytes]:
    """The status and body of ``method path`` sent as written (no normalising, as
    `curl --path-as-is` sends it), with ``login`` as HTTP basic auth."""
    host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def group_members(group: int) -> list[int]:
    """The live processes of process group ``group``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # it ended while we looked
            state, _, member_of = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if int(member_of) == group and state != "Z":
                found.append(int(entry.name))
    return found


def api(url: str, endpoint: str, **query) -> dict:
    """GET /api/2.0/mlflow/<endpoint>?<query>, as JSON."""
    with call(f"{url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}") as response:
        return json.load(response)


def call(url: str, body: bytes | None = None):
    """The open response to GET ``url`` (POST of JSON ``body``); a user:password in ``url`` is sent
    as HTTP basic auth, as MLflow's clients send it."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if parts.password is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        url = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
    return _OPENER.open(urllib.request.Request(url, data=body, headers=headers), timeout=60)


def search_runs(url: str, experiment: str = "catgan") -> list[dict]:
    exp = api(url, "experiments/get-by-name", experiment_name=experiment)["experiment"]
    body = json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 1000}).encode()
    with call(f"{url}/api/2.0/mlflow/runs/search", body) as response:
        return json.load(response).get("runs", [])


def assert_complete(url: str, run_id: str, epochs: int, steps: int, evaluated: bool = False) -> dict:
    """The run is FINISHED and holds each epoch's and each step's values exactly once, and one
    sample grid per epoch (0 = before training); returns the run."""
    run = api(url, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED", run["info"]
    keys = {m["key"] for m in run["data"]["metrics"]}
    assert {EPOCH_KEY + "loss_d", EPOCH_KEY + "loss_g", EPOCH_KEY + "swd_avg",
            STEP_KEY + "loss_d"} <= keys, keys
    for key in sorted(keys):
        history = api(url, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        expected = ([epochs] if key.startswith("eval.") else
                    list(range(1, steps + 1)) if key.startswith(STEP_KEY) else
                    list(range(1, epochs + 1)))
        assert sorted(m["step"] for m in history) == expected, (key, history)
    if evaluated:
        assert any(k.startswith("eval.") for k in keys), keys
    names = [Path(f["path"]).name for f in artifacts(url, run_id, "images")]
    previews, pngs = ([int(n.split("+step+")[1].split("+")[0]) for n in names
                       if n.startswith("samples+step+") and n.endswith(suffix)]
                      for suffix in ("+compressed.webp", ".png"))
    # A grid counts once its preview, written last, is there; a server killed between the two
    # uploads leaves a lone PNG beside the complete re-sent pair.
    assert sorted(previews) == list(range(epochs + 1)) == sorted(set(pngs)), names
    return run


def artifacts(url: str, run_id: str, path: str = "") -> list[dict]:
    return api(url, "artifacts/list", run_id=run_id, path=path).get("files", [])


def secret_uri(url: str, user: str = "c4tg4n-user", password: str = PASSWORD) -> str:
    """``url`` with a user and password (by default planted ones, which a server without auth
    takes)."""
    user, password = (urllib.parse.quote(part, safe="") for part in (user, password))
    return url.replace("http://", f"http://{user}:{password}@", 1)


def files_holding_mark(*folders: Path, skip: frozenset[Path] = frozenset()) -> list[str]:
    return [str(p) for folder in folders for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p not in skip and MARK.encode() in p.read_bytes()]
