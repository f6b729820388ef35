"""Who may use the team server (catgan.tracking.server): MLflow's basic-auth app, its users,
their passwords.

The users and their permissions live in the database ``mlflow_auth`` of the server's PostgreSQL
cluster, beside the tracking store's ``mlflow``: MLflow's auth store takes any SQLAlchemy URI, and
there it has what the tracking store has (loopback only, the password in ``pgpass``, one cluster to
back up), and takes the writes of several server workers, which a SQLite file would serialise.
Each user's password is kept in ``<SERVER_DIR>/credentials/<user>`` (0600) in the format of
``~/.mlflow/credentials``, which MLflow's clients read: the file to hand to that teammate.
"""
from __future__ import annotations

import configparser
import contextlib
import importlib.util
import ipaddress
import logging
import os
import re
import secrets
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

from catgan.errors import UserError
from catgan.fileio import write_text

log = logging.getLogger(__name__)

ADMIN = "admin"
DATABASE = "mlflow_auth"
# Every user may read and log into every experiment (the team shares `catgan`); only an
# experiment's creator (MANAGE) and the admin may delete it or change who may use it.
_DEFAULT_PERMISSION = "EDIT"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also a file name under credentials/
_CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def wanted(host: str, setting: bool | None) -> bool:
    """Whether the server runs MLflow's basic-auth app: ``setting`` (SERVER_AUTH) where given, else
    whether ``host`` lets in more than this machine."""
    return not is_loopback(host) if setting is None else setting


def warn_if_open(host: str, setting: bool | None) -> None:
    if setting is False and not is_loopback(host):
        log.warning("the MLflow server on %s runs without authentication (SERVER_AUTH=0): anyone "
                    "who can reach it can read, change and delete every run", host)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is loopback (an unknown name counts as not)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def server_env(folder: Path, database_uri: str, database_existed: bool) -> dict[str, str]:
    """The environment of ``mlflow server --app-name basic-auth``: the config file, which holds no
    secret, and the admin's password and the CSRF key, kept off the command line.

    MLflow creates the admin, with that password, on the first start against an empty user
    database, and leaves it alone on later starts. An admin whose credentials file is gone gets a
    new password, here, so that whoever holds ``folder`` can always add users.
    """
    if importlib.util.find_spec("flask_wtf") is None:
        raise UserError("the MLflow server's authentication needs Flask-WTF, which is not "
                        "installed; run `make setup` (it installs mlflow[auth]), or start the "
                        "server on 127.0.0.1 without it (SERVER_AUTH=0)")
    admin_file = credentials_file(folder, ADMIN)
    if admin_file.is_file():
        password = read_credentials(admin_file)[1]
    else:
        password = _new_password()
        if database_existed and _reset_password(database_uri, ADMIN, password):
            log.warning("the admin's credentials file %s was missing: the admin has a new password, "
                        "in that file", admin_file)
        write_credentials(admin_file, ADMIN, password)
    config = folder / "basic_auth.ini"
    # A verified login is cached for a minute: without it every request pays a scrypt hash
    # (0.3 s of the server's CPU per request here, 20 s per tiny run). A changed or deleted
    # password may still pass on another worker until then.
    write_text(config, f"[mlflow]\ndefault_permission = {_DEFAULT_PERMISSION}\n"
                       f"database_uri = {database_uri}\nadmin_username = {ADMIN}\n"
                       "auth_cache_ttl_seconds = 60\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}


def add_user(folder: Path, name: str, server_url: Callable[[], str]) -> Path:
    """A new user on the running server of ``folder``, created by its admin through MLflow's API;
    the file holding the new password. A user whose file is gone gets a new password: only that
    file ever held the old one."""
    if not _USER_NAME.fullmatch(name):
        raise UserError(f"user name '{name}' is not usable: use letters, digits, '.', '_' and '-' "
                        "(64 at most), starting with a letter or digit")
    path = credentials_file(folder, name)
    if path.exists():
        raise UserError(f"user '{name}' was added already; their credentials are in {path} "
                        "(delete it and add them again to give them a new password)")
    admin_file = credentials_file(folder, ADMIN)
    if not admin_file.is_file():
        raise UserError(f"the MLflow server of {folder} has never run with authentication (no "
                        f"{admin_file}); restart it with SERVER_AUTH=1")
    admin, url = read_credentials(admin_file), server_url()
    with _quiet_import():
        from mlflow.exceptions import MlflowException
        from mlflow.server.auth.client import AuthServiceClient

    password = _new_password()
    write_credentials(path, name, password)  # first: a user is never left without their password
    try:
        with _as_user(*admin):
            client = AuthServiceClient(url)
            try:
                client.create_user(name, password)
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                client.update_user_password(name, password)
                log.warning("user '%s' was on the server without a credentials file: they have a "
                            "new password", name)
    except MlflowException as err:  # what MLflow's client raises for any failed request
        path.unlink()
        raise UserError(_refused(err, folder, url, name, admin_file)) from None
    return path


def _refused(err, folder: Path, url: str, name: str, admin_file: Path) -> str:
    status = err.get_http_status_code()
    if status == 404:
        return (f"the MLflow server of {folder} at {url} runs without authentication; restart it "
                "with SERVER_AUTH=1 to add users")
    if status == 401:
        return f"the MLflow server at {url} refused the admin's credentials in {admin_file}"
    return f"the MLflow server at {url} did not add user '{name}' ({err.message.splitlines()[0]})"


def credentials_file(folder: Path, name: str) -> Path:
    return folder / "credentials" / name


def write_credentials(path: Path, name: str, password: str) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_text(path, f"[mlflow]\n{_CREDENTIAL_VARS[0].lower()} = {name}\n"
                     f"{_CREDENTIAL_VARS[1].lower()} = {password}\n", mode=0o600)


def read_credentials(path: Path) -> tuple[str, str]:
    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read(path)
        return tuple(config["mlflow"][var.lower()] for var in _CREDENTIAL_VARS)
    except (configparser.Error, KeyError):
        raise UserError(f"{path} is not a credentials file: it needs a [mlflow] section with "
                        f"{' and '.join(var.lower() for var in _CREDENTIAL_VARS)}; delete it, and "
                        "the next start (admin) or add-user makes a new one") from None


def _new_password() -> str:
    return secrets.token_urlsafe(24)


@contextlib.contextmanager
def _as_user(name: str, password: str):
    """MLflow's clients read the credentials from the environment at each request."""
    saved = {var: os.environ.get(var) for var in _CREDENTIAL_VARS}
    os.environ.update(zip(_CREDENTIAL_VARS, (name, password)))
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@contextlib.contextmanager
def _quiet_import():
    """MLflow's auth package, on import, warns of a deprecation in MLflow's own server code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        yield


def _reset_password(database_uri: str, name: str, password: str) -> bool:
    """Set ``name``'s password in MLflow's user database, if it has that user."""
    with _quiet_import():
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    try:
        if not store.has_user(name, use_primary=True):
            return False
        store.update_user(name, password=password)
        return True
    finally:
        store.engine.dispose()
