"""Where MLflow runs are stored, and the one place that opens a client on that store.

The store defaults to SQLite ``mlflow.db`` at the project root, as an absolute URI resolved from
``DVC_ROOT``, so temp and queued DVC experiments land in the workspace's store. SQLite needs two
workarounds when several processes share it: a lock while a new store is created, and retries
while another writer holds it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from catgan.config import PASSWORD_IN_URL, TrackingConfig, project_root
from catgan.errors import UserError

_LOCK_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)  # seconds, about 30 s in all with jitter
# Its own generator: retries must not move the global RNGs that checkpoints save and restore.
_jitter = random.Random()
# MLflow's defaults retry a dead tracking server for minutes per call, stalling training; the
# tracker keeps what fails and re-sends it (catgan.tracking.client), so one quick retry is enough here.
_HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def tracking_uri(cfg: TrackingConfig, root: Path | None = None) -> str:
    root = root or project_root()
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or f"sqlite:///{root / 'mlflow.db'}"


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return PASSWORD_IN_URL.sub(r"\1:***@", text)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def open_client(uri: str, *, must_exist: bool = False, fix: str = "fix tracking.uri or "
                "MLFLOW_TRACKING_URI, or set tracking.enabled: false") -> Retrying:
    """An ``MlflowClient`` on ``uri`` whose calls wait out a locked SQLite store.

    ``must_exist``: a SQLite store that is not there is an error (readers), not created (writers).
    Any failure to reach the store is a UserError that ends with ``fix``.
    """
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").addFilter(_drop_store_errors)  # no-op once added
    if is_http(uri):
        for name, value in _HTTP_BOUNDS.items():
            os.environ.setdefault(name, value)  # read by MLflow at each request
    if PASSWORD_IN_URL.search(uri):
        # MLflow prints a finished run's link, password included, on stdout: into DVC's logs.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    db = sqlite_path(uri)
    if must_exist and db is not None and not db.is_file():
        raise UserError(f"MLflow store {uri} does not exist; train with tracking.enabled: true "
                        f"first, or {fix}")
    try:
        with _first_use_lock(db):
            client = Retrying(MlflowClient(tracking_uri=uri))
            client.search_experiments(max_results=1)  # MLflow opens, creates or migrates lazily
    except Exception as err:
        if _status(err) == 401:
            raise UserError(_login_refused(uri)) from None
        raise UserError(f"MLflow tracking store {redact(uri)} is unreachable ({type(err).__name__}: "
                        f"{redact(first_line(err))}); {fix}") from None
    return client


def _status(err: Exception) -> int | None:
    """The HTTP status of an MLflow error from a tracking server."""
    from mlflow.exceptions import MlflowException

    return err.get_http_status_code() if isinstance(err, MlflowException) else None


def _login_refused(uri: str) -> str:
    from mlflow.utils.credentials import read_mlflow_creds

    given = all(read_mlflow_creds()) or PASSWORD_IN_URL.search(uri)
    return (f"MLflow tracking server {redact(uri)} "
            + ("refused the user and password given" if given else "asks for a user and password")
            + " (HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the ones in "
            "the credentials file the server's admin made for you (`make server-user NAME=<you>`), "
            "or put that file at ~/.mlflow/credentials")


def finished_runs(uri: str, experiment: str) -> tuple[Retrying, list]:
    """A reader's client on ``uri`` and the FINISHED runs of ``experiment``, newest first."""
    client = open_client(uri, must_exist=True, fix="pass --tracking-uri")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"MLflow store {redact(uri)} has no experiment '{experiment}'; pass "
                        "--experiment with the name set in tracking.experiment")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], page_token=token,
                                  max_results=1000)
        runs.extend(page)
        token = page.token
        if not token:
            return client, runs


class Retrying:
    """``target`` with every method call retried, with backoff, while SQLite says "database is locked".

    Each MLflow call is retried on its own: retrying a group of them could repeat one that succeeded,
    such as creating the run. SQLite refuses at once, without waiting out its busy timeout, a writer
    that would deadlock with another process's (two queued experiments logging at the same time).
    """

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str):
        method = getattr(self._target, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            for delay in (*_LOCK_BACKOFF, None):
                try:
                    return method(*args, **kwargs)
                except Exception as err:
                    if delay is None or not _locked(err):
                        raise
                    time.sleep(delay * (1 + _jitter.random()))

        return call


def _first_use_lock(db: Path | None) -> contextlib.AbstractContextManager:
    """A lock beside a SQLite store, held while a client opens it: MLflow creates and migrates its
    tables on first use, and two processes doing so at once (``dvc queue start -j 2``) both fail."""
    if db is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(db.with_name(db.name + "-lock"))  # -lock: beside SQLite's own -journal


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it wraps, outermost first: MLflow's, SQLAlchemy's, sqlite3's."""
    chain = []
    while isinstance(err, BaseException) and err not in chain:
        chain.append(err)
        err = getattr(err, "orig", None) or err.__cause__ or err.__context__
    return chain


def _locked(err: BaseException) -> bool:
    """Whether SQLite said "database is locked" anywhere in the exception's chain."""
    return any("database is locked" in str(e) or "database table is locked" in str(e)
               for e in _chain(err))


def root_cause(err: BaseException) -> str:
    """The innermost error, as "Type: first line"."""
    inner = _chain(err)[-1]
    return f"{type(inner).__name__}: {first_line(inner)}"


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else ""


def _drop_store_errors(record: logging.LogRecord) -> bool:
    """MLflow logs a traceback for every SQLite error; the tracker reports them in one line."""
    return not record.getMessage().startswith("SQLAlchemy database error")
