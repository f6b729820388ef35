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
# tracker keeps what fails and re-sends it (catgan.tracking), so one quick retry is enough here.
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

    _quiet_mlflow_store_errors()
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
        raise UserError(f"MLflow tracking store {redact(uri)} is unreachable ({type(err).__name__}: "
                        f"{redact(first_line(err))}); {fix}") from None
    return client


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


@contextlib.contextmanager
def _first_use_lock(db: Path | None):
    """Hold an exclusive lock beside a SQLite store while opening it.

    MLflow creates and migrates a SQLite store's tables the first time a client opens it; two
    processes doing so at once (experiments queued with ``dvc queue start -j 2``) both fail.
    """
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(db.name + "-lock")):  # -lock: beside SQLite's own -journal
        yield


def _locked(err: BaseException | None) -> bool:
    """Whether SQLite said "database is locked" anywhere in the exception's chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if "database is locked" in str(err) or "database table is locked" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def root_cause(err: BaseException) -> str:
    """The innermost error, as "Type: first line": MLflow wraps SQLAlchemy, which wraps sqlite3."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "orig", None) or err.__cause__ or err.__context__
        if not isinstance(inner, BaseException):
            break
        err = inner
    return f"{type(err).__name__}: {first_line(err)}"


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else ""


class _DropStoreErrors(logging.Filter):
    """MLflow logs a traceback for every SQLite error; the tracker reports them in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SQLAlchemy database error")


def _quiet_mlflow_store_errors() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropStoreErrors) for f in logger.filters):
        logger.addFilter(_DropStoreErrors())
