"""A team's MLflow tracking server: PostgreSQL as its store, artifacts served through it.

``python -m catgan.tracking.server start|stop|add-user NAME`` (``make server``, ``make server-stop``,
``make server-user NAME=...``). Everything lives in one folder (default ``.server/`` at the project
root): the PostgreSQL cluster, the served artifacts, the logs, the users' credentials, and the
process group of the MLflow server, so that stop ends exactly what start began. A server that lets
in more than this machine asks for a user and password (catgan.tracking.auth); every request
passes catgan's gate first (catgan.tracking.gate).
Neither server runs as root. PostgreSQL refuses to: as root its commands run as the user
``postgres`` that Debian's package creates, which then owns the cluster's folder. MLflow runs as
the system user ``catgan-mlflow`` (created on first use), which owns the artifacts and nothing
else, so that no request can make it write outside its store.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from catgan.config import TrackingConfig, load_params, project_root
from catgan.errors import UserError, cli_entry
from catgan.fileio import write_text
from catgan.tracking import auth as serverauth
from catgan.tracking.localserver import check_port, client_host, free_port, stop_group, wait_answering

log = logging.getLogger(__name__)

USER, DATABASE = "catgan", "mlflow"
_PG_USER = "postgres"
MLFLOW_USER = "catgan-mlflow"
_CAP_DAC_READ_SEARCH = 2
# setpriv's options that let MLflow's user read past folder permissions (CAP_DAC_READ_SEARCH) and
# nothing more. no_setuid_fixup keeps the kernel from dropping that capability in access(2), which
# checks as the real user: alembic and MLflow test their own folders with os.access, so without it
# a venv in a folder only root may enter (a clone in `mktemp -d`) stops the server from starting.
READ_PAST_FOLDERS = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                     "--bounding-set=-all,+dac_read_search", "--securebits=+no_setuid_fixup"]
# In the environment of the MLflow server and every process it starts: what stop looks for.
_MARK = "CATGAN_SERVER_DIR"
_STOP_TIMEOUT = 15.0
_INSTALL = "install it with `apt-get install postgresql`"


def start(folder: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 2,
          timeout: float = 120, auth: bool | None = None,
          login_cache_s: int = serverauth.LOGIN_CACHE_S) -> str:
    """PostgreSQL (initialised on first use), its databases, then the MLflow server; its URL.

    ``auth``: run MLflow's basic-auth app (SERVER_AUTH); None: only where ``host`` is not loopback.
    ``login_cache_s``: how long a worker trusts a checked password (0: it checks every request).
    """
    folder = folder.resolve()
    if group := server_group(folder):
        raise UserError(f"an MLflow server from {folder} is already running (process group "
                        f"{group}); stop it first with `make server-stop`")
    check_port(host, port, "the MLflow server", "SERVER_PORT")
    serverauth.warn_if_open(host, auth)
    auth = serverauth.wanted(host, auth)
    pg_port = _start_postgres(folder)
    try:
        return _start_mlflow(folder, pg_port, host, port, workers, timeout, auth, login_cache_s)
    except BaseException:
        stop(folder)  # a start that fails leaves nothing running
        raise


def _start_mlflow(folder: Path, pg_port: int, host: str, port: int, workers: int, timeout: float,
                  auth: bool, login_cache_s: int) -> str:
    _create_databases(folder, pg_port, (DATABASE, serverauth.DATABASE) if auth else (DATABASE,))
    artifacts = folder / "artifacts"
    artifacts.mkdir(exist_ok=True)
    mlflow = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow, "server", "--backend-store-uri", _database_uri(pg_port, DATABASE),
           "--serve-artifacts", "--artifacts-destination", str(artifacts),
           "--host", host, "--port", str(port), "--workers", str(workers),
           "--app-name", "catgan-auth" if auth else "catgan"]
    env = {**os.environ, "PGPASSFILE": str(folder / "pgpass"), _MARK: str(folder),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_DEPLOYMENTS_TARGET", None)  # no gateway to proxy to (catgan.tracking.routes)
    if auth:
        env.update(serverauth.server_env(folder, _database_uri(pg_port, serverauth.DATABASE),
                                         login_cache_s))
    cmd = _unprivileged((artifacts, folder / "pgpass")) + cmd
    with open(folder / "mlflow.log", "ab") as log:
        # Its own session: stop signals its whole group (the workers) and nothing else.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=folder, start_new_session=True)
    write_text(folder / "mlflow.pid", f"{proc.pid}\n")
    url = f"http://{client_host(host)}:{port}"
    write_text(folder / "mlflow.url", url + "\n")
    wait_answering(f"{url}/health", proc, timeout, f"the MLflow server ({url})",
                   lambda: f"see {folder / 'mlflow.log'}")
    return url


def running_url(folder: Path) -> str:
    """The URL of the MLflow server started from ``folder``, which must be running."""
    folder = folder.resolve()
    if not server_group(folder) or not (folder / "mlflow.url").is_file():
        raise UserError(f"no MLflow server of {folder} is running; start it with `make server` "
                        "(with SERVER_DIR, if not .server)")
    return (folder / "mlflow.url").read_text().strip()


def stop(folder: Path) -> bool:
    """Stop the MLflow server and PostgreSQL started from ``folder``; whether either was running.
    The server's whole process group goes, its first process (``mlflow server``) gone or not."""
    folder = folder.resolve()
    group = server_group(folder)
    if group:
        stop_group(group, _STOP_TIMEOUT)
    for name in ("mlflow.pid", "mlflow.url"):
        (folder / name).unlink(missing_ok=True)
    cluster = folder / "postgres"
    running = cluster.is_dir() and _pg(folder, "pg_ctl", "-D", str(cluster), "status", check=False).returncode == 0
    if running:
        _pg(folder, "pg_ctl", "-D", str(cluster), "-m", "fast", "-w", "-t", "60", "stop")
    return bool(group) or running


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


def _project_experiment() -> str:
    """The MLflow experiment the project's stages log into: tracking.experiment."""
    params = project_root() / "params.yaml"
    return (load_params(params).tracking if params.is_file() else TrackingConfig()).experiment


def _database_uri(pg_port: int, database: str) -> str:
    return f"postgresql+psycopg2://{USER}@127.0.0.1:{pg_port}/{database}"  # password: in PGPASSFILE


def _create_databases(folder: Path, pg_port: int, names: tuple[str, ...]) -> None:
    """Create those of ``names`` the cluster lacks."""
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
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()


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
    _check_reach(_PG_USER, "PostgreSQL", "it refuses root", [path])


def _unprivileged(owns: tuple[Path, ...]) -> list[str]:
    """As root, the command prefix that runs MLflow as MLFLOW_USER, made the owner of ``owns`` (and
    all that lies in them); nothing for anyone else.

    That user needs to read this Python, MLflow and catgan. Where it cannot (a pyenv in /root,
    0700), it gets CAP_DAC_READ_SEARCH: it may then read any file, and still writes only where
    MLFLOW_USER may, its store and /tmp.
    """
    if os.geteuid() != 0:
        return []
    user = _mlflow_user()
    for path in owns:
        for found in (path, *path.rglob("*")):
            if found.lstat().st_uid != user.pw_uid:  # a store from before: root's
                os.lchown(found, user.pw_uid, user.pw_gid)
    _check_reach(MLFLOW_USER, "The MLflow server", "it does not run as root", list(owns))
    code = [os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"],
            *(str(Path(module.__file__).parent) for module in (importlib.import_module("mlflow"),
                                                               importlib.import_module("catgan")))]
    caps = []
    if blocked := _unreachable(MLFLOW_USER, code):
        if not _bounded_cap(_CAP_DAC_READ_SEARCH):
            raise UserError(f"the MLflow server does not run as root, and its user '{MLFLOW_USER}' "
                            f"cannot reach {blocked} (nor may it be given CAP_DAC_READ_SEARCH "
                            "here); let it through the parent folders (chmod o+x), or start the "
                            "server as another user")
        log.warning("the MLflow server runs as user '%s', which cannot reach %s: it gets "
                    "CAP_DAC_READ_SEARCH to read it, and may read any file (it still writes only "
                    "its store); let that user through the parent folders (chmod o+x) to run the "
                    "server without", MLFLOW_USER, blocked)
        caps = READ_PAST_FOLDERS
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--no-new-privs", *caps, "--"]


def _bounded_cap(number: int) -> bool:
    """Whether this process may hand capability ``number`` on (its bounding set holds it)."""
    status = Path("/proc/self/status").read_text()
    return bool(int(status.split("CapBnd:")[1].split()[0], 16) >> number & 1)


def _mlflow_user() -> pwd.struct_passwd:
    """The system user MLflow runs as, created when missing (useradd, as root)."""
    try:
        return pwd.getpwnam(MLFLOW_USER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                           "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", MLFLOW_USER],
                          capture_output=True, text=True, timeout=60)
    try:
        return pwd.getpwnam(MLFLOW_USER)  # made now, or by a start beside this one
    except KeyError:
        why = (made.stderr.strip().splitlines() or [f"exit code {made.returncode}"])[-1]
        raise UserError(f"the MLflow server does not run as root, and the user '{MLFLOW_USER}' to "
                        f"run it as could not be made ({why}); create it with `useradd --system "
                        f"{MLFLOW_USER}`, or start the server as another user") from None


def _check_reach(user: str, what: str, why: str, paths: list) -> None:
    if blocked := _unreachable(user, paths):
        raise UserError(f"{what} runs as user '{user}' here ({why}), and that user cannot reach "
                        f"{blocked}; let it through the parent folders (chmod o+x) or choose a "
                        "folder it can reach with SERVER_DIR=<folder>")


def _unreachable(user: str, paths: list) -> str | None:
    """The first of ``paths`` that ``user`` cannot read; None if it reads them all."""
    script = 'for p; do test -r "$p" || { echo "$p"; exit 1; }; done'
    reach = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script, "sh", *map(str, paths)],
                           capture_output=True, text=True, timeout=30)
    return (reach.stdout.strip() or str(paths[0])) if reach.returncode else None


def server_group(folder: Path) -> int | None:
    """The process group of the MLflow server started from ``folder``, while any process of it
    lives, its first one gone or not; None once none does. A group's id is not given to another
    process while the group has members, and ours carry _MARK in their environment."""
    try:
        group = int((folder / "mlflow.pid").read_text())
    except (OSError, ValueError):
        return None
    mark = f"{_MARK}={folder}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, member_of = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            if int(member_of) == group and state != "Z" \
                    and mark in (entry / "environ").read_bytes().split(b"\0"):
                return group
        except OSError:  # it ended while we looked
            continue
    return None


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
        experiment = _project_experiment()
        path = serverauth.add_user(folder, args.name, lambda: running_url(folder), experiment)
        print(f"added user '{args.name}' to the MLflow server of {folder}, who may log runs into "
              f"experiment '{experiment}'; their credentials are in {path}: hand them that file, "
              "to put at ~/.mlflow/credentials", flush=True)
    elif stop(folder):
        print(f"stopped the MLflow server and PostgreSQL of {folder}")
    else:
        print(f"no MLflow server or PostgreSQL of {folder} was running")


if __name__ == "__main__":
    main()
