"""A team's MLflow tracking server: PostgreSQL as its store, artifacts served through it.

``python -m catgan.tracking.server start|stop|add-user NAME`` (``make server``, ``make server-stop``,
``make server-user NAME=...``). Everything lives in one folder (default ``.server/`` at the project
root): the PostgreSQL cluster, the served artifacts, the logs, the users' credentials, and the pid
file of the MLflow server, so that stop ends exactly what start began. A server that lets in more
than this machine asks for a user and password (catgan.tracking.auth).
PostgreSQL refuses to run as root: as root its commands run as the user ``postgres`` that Debian's
package creates, which then owns the cluster's folder.
"""
from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from catgan.config import project_root
from catgan.errors import UserError, cli_entry
from catgan.fileio import write_text
from catgan.tracking import auth as serverauth
from catgan.tracking.localserver import check_port, client_host, free_port, stop_group, wait_answering

USER, DATABASE = "catgan", "mlflow"
_PG_USER = "postgres"
_STOP_TIMEOUT = 15.0
_INSTALL = "install it with `apt-get install postgresql`"


def start(folder: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 2,
          timeout: float = 120, auth: bool | None = None) -> str:
    """PostgreSQL (initialised on first use), its databases, then the MLflow server; its URL.

    ``auth``: run MLflow's basic-auth app (SERVER_AUTH); None: only where ``host`` is not loopback.
    """
    folder = folder.resolve()
    if pid := _mlflow_pid(folder):
        raise UserError(f"an MLflow server from {folder} is already running (pid {pid}); stop it "
                        "first with `make server-stop`")
    check_port(host, port, "the MLflow server", "SERVER_PORT")
    serverauth.warn_if_open(host, auth)
    auth = serverauth.wanted(host, auth)
    pg_port = _start_postgres(folder)
    existed = _create_databases(folder, pg_port,
                                (DATABASE, serverauth.DATABASE) if auth else (DATABASE,))
    artifacts = folder / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", _database_uri(pg_port, DATABASE),
           "--serve-artifacts", "--artifacts-destination", str(artifacts),
           "--host", host, "--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "PGPASSFILE": str(folder / "pgpass"),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if auth:
        cmd += ["--app-name", "basic-auth"]
        env.update(serverauth.server_env(folder, _database_uri(pg_port, serverauth.DATABASE),
                                         serverauth.DATABASE in existed))
    with open(folder / "mlflow.log", "ab") as log:
        # Its own session: stop signals its whole group (the workers) and nothing else.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    write_text(folder / "mlflow.pid", f"{proc.pid}\n")
    url = f"http://{client_host(host)}:{port}"
    write_text(folder / "mlflow.url", url + "\n")
    try:
        wait_answering(f"{url}/health", proc, timeout, f"the MLflow server ({url})",
                       lambda: f"see {folder / 'mlflow.log'}")
    except BaseException:
        stop(folder)
        raise
    return url


def running_url(folder: Path) -> str:
    """The URL of the MLflow server started from ``folder``, which must be running."""
    folder = folder.resolve()
    if not _mlflow_pid(folder) or not (folder / "mlflow.url").is_file():
        raise UserError(f"no MLflow server of {folder} is running; start it with `make server` "
                        "(with SERVER_DIR, if not .server)")
    return (folder / "mlflow.url").read_text().strip()


def stop(folder: Path) -> bool:
    """Stop the MLflow server and PostgreSQL started from ``folder``; whether either was running."""
    folder = folder.resolve()
    pid = _mlflow_pid(folder)
    if pid:
        stop_group(pid, _STOP_TIMEOUT)
    for name in ("mlflow.pid", "mlflow.url"):
        (folder / name).unlink(missing_ok=True)
    cluster = folder / "postgres"
    running = cluster.is_dir() and _pg(folder, "pg_ctl", "-D", str(cluster), "status", check=False).returncode == 0
    if running:
        _pg(folder, "pg_ctl", "-D", str(cluster), "-m", "fast", "-w", "-t", "60", "stop")
    return bool(pid) or running


def _start_postgres(folder: Path) -> int:
    """The cluster's port, after initialising and starting it as needed."""
    cluster = folder / "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    if not (cluster / "PG_VERSION").is_file():
        _init_cluster(folder, cluster)
    if _pg(folder, "pg_ctl", "-D", str(cluster), "status", check=False).returncode == 0:
        return int((cluster / "postmaster.pid").read_text().splitlines()[3])
    port = free_port()
    # TCP on loopback only, no Unix socket: its path would have to fit in 107 bytes.
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
    _pg(folder, "pg_ctl", "-D", str(cluster), "-l", str(cluster / "server.log"), "-o", options,
        "-w", "-t", "60", "start")
    return port


def _init_cluster(folder: Path, cluster: Path) -> None:
    """A new cluster whose one user has a random password, kept in a libpq password file."""
    shutil.rmtree(cluster, ignore_errors=True)  # a half-made one from an interrupted start
    cluster.mkdir(mode=0o700)
    password = secrets.token_hex(16)
    pwfile = folder / "postgres.pw"
    write_text(pwfile, password + "\n", mode=0o600)
    try:
        for path in (cluster, pwfile):
            _give_to_postgres(path)
        _pg(folder, "initdb", "-D", str(cluster), "-U", USER, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions")
    finally:
        pwfile.unlink(missing_ok=True)
    pgpass = folder / "pgpass"
    # 0600 from the start: libpq ignores a password file others can read, and none may read it.
    write_text(pgpass, f"127.0.0.1:*:*:{USER}:{password}\n", mode=0o600)


def _database_uri(pg_port: int, database: str) -> str:
    return f"postgresql+psycopg2://{USER}@127.0.0.1:{pg_port}/{database}"  # password: in PGPASSFILE


def _create_databases(folder: Path, pg_port: int, names: tuple[str, ...]) -> set[str]:
    """Create those of ``names`` the cluster lacks; the names it had."""
    import psycopg2

    os.environ["PGPASSFILE"] = str(folder / "pgpass")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user=USER, dbname="postgres",
                                connect_timeout=30)
    except psycopg2.Error as err:
        raise UserError(f"cannot connect to the PostgreSQL of {folder} on port {pg_port} "
                        f"({str(err).strip().splitlines()[0]}); see {folder / 'postgres'}/server.log"
                        ) from None
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction (nor `with conn`)
    existed = set()
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {name}")
                else:
                    existed.add(name)
    finally:
        conn.close()
    return existed


def _pg(folder: Path, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(_pg_bin() / tool), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", _PG_USER, "--", *cmd]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise UserError(f"PostgreSQL's {tool} failed for {folder} ({lines[-1]}); see "
                        f"{folder / 'postgres'}/server.log")
    return proc


def _pg_bin() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not debian:
        raise UserError(f"the PostgreSQL server (initdb, pg_ctl) is not installed here; {_INSTALL}")
    return debian[-1].parent


def _give_to_postgres(path: Path) -> None:
    """As root, hand ``path`` to the user PostgreSQL runs as, and check that it can reach it."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(_PG_USER)
    except KeyError:
        raise UserError(f"PostgreSQL refuses to run as root and there is no user '{_PG_USER}' to run "
                        f"it as; {_INSTALL} (it creates that user) or run as another user") from None
    os.chown(path, user.pw_uid, user.pw_gid)
    reach = subprocess.run(["runuser", "-u", _PG_USER, "--", "test", "-r", str(path)],
                           capture_output=True, timeout=30)
    if reach.returncode != 0:
        raise UserError(f"PostgreSQL runs as user '{_PG_USER}' here (it refuses root), and that user "
                        f"cannot reach {path}; let it through the parent folders (chmod o+x) or "
                        "choose a folder it can reach with SERVER_DIR=<folder>")


def _mlflow_pid(folder: Path) -> int | None:
    """The pid in the pid file, if that process is still an MLflow server (pids get reused)."""
    try:
        pid = int((folder / "mlflow.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(part.endswith(b"mlflow") for part in cmdline) and b"server" in cmdline else None


@cli_entry
def main(argv: list[str] | None = None, prog: str = "python -m catgan.server") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop", "add-user"))
    parser.add_argument("name", nargs="?", help="add-user: the new user's name")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the server's folder (default: .server at the project root)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default: 5000)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow server worker processes")
    parser.add_argument("--auth", choices=("0", "1"), default=None,
                        help="1: users must log in, 0: anyone may (default: 1 unless --host is "
                             "loopback)")
    args = parser.parse_args(argv)
    if (args.action == "add-user") != bool(args.name):
        parser.error("add-user takes the new user's name (make server-user NAME=<name>), and "
                     "only add-user does")
    folder = (args.dir or project_root() / ".server").resolve()
    if args.action == "start":
        auth = None if args.auth is None else args.auth == "1"
        url = start(folder, args.host, args.port, args.workers, auth=auth)
        print(f"MLflow server at {url} (PostgreSQL store and artifacts in {folder}); point runs at "
              f"it with MLFLOW_TRACKING_URI={url}; `make server-stop` stops it", flush=True)
        if serverauth.wanted(args.host, auth):
            print("Users must log in: the admin's credentials are in "
                  f"{serverauth.credentials_file(folder, serverauth.ADMIN)}; `make server-user "
                  "NAME=<name>` adds a teammate", flush=True)
    elif args.action == "add-user":
        path = serverauth.add_user(folder, args.name, lambda: running_url(folder))
        print(f"added user '{args.name}' to the MLflow server of {folder}; their credentials are "
              f"in {path}: hand them that file, to put at ~/.mlflow/credentials", flush=True)
    elif stop(folder):
        print(f"stopped the MLflow server and PostgreSQL of {folder}")
    else:
        print(f"no MLflow server or PostgreSQL of {folder} was running")


if __name__ == "__main__":
    main()
