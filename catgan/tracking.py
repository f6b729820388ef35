"""MLflow tracking through its client API (no global run state), imported lazily.

The store defaults to SQLite ``mlflow.db`` at the project root with artifacts beside it, as absolute
URIs resolved from ``DVC_ROOT``, so temp and queued DVC experiments land in the workspace's store.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; a new store opened by two processes at once may fail there
    fcntl = None

from catgan.config import TrackingConfig, project_root
from catgan.errors import UserError

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's limit of metrics per log_batch call
STUDY_TAG, ROLE_TAG = "catgan.study", "catgan.role"  # a study's parent run has role "study"


def tracking_uri(cfg: TrackingConfig, root: Path | None = None) -> str:
    root = root or project_root()
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or f"sqlite:///{root / 'mlflow.db'}"


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def start(self, params: dict, tags: dict, run_id: str | None = None) -> str | None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_rows(self, rows: list[dict[str, float]], step_key: str, columns: tuple[str, ...],
                 prefix: str = "") -> None: ...

    def log_image(self, image, key: str, step: int) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NullTracker):
    """One MLflow run, written so that training outlives its tracking.

    Logging is idempotent: a metric value already stored at its step, or a ``key``/``step`` image,
    is not logged again, so a run resumed after a kill can re-log its epochs without duplicates.
    A locked SQLite store is waited for (``Retrying``); any other failure is logged once as an
    ERROR, every later call is skipped, and ``finish`` reports the run as incomplete, not closed.
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        from mlflow.tracking import MlflowClient

        _quiet_mlflow_store_errors()
        self.uri = uri
        self.run_id = None
        self.failure: str | None = None
        self._skipped = 0
        self._fresh = False  # a run this tracker created holds nothing yet: no need to look
        self._logged: dict[str, set[tuple[int, float]]] = {}
        self._images: set[tuple[str, int]] | None = None
        try:
            with _first_use_lock(uri):
                self.client = Retrying(MlflowClient(tracking_uri=uri))
                self.experiment_id = self._experiment(experiment, artifact_root)
        except Exception as err:
            raise UserError(
                f"MLflow tracking store {uri} is unreachable ({type(err).__name__}: "
                f"{_first_line(err)}); fix tracking.uri or "
                "MLFLOW_TRACKING_URI, or set tracking.enabled: false") from None

    def _experiment(self, name: str, artifact_root: Path) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())
        except Exception:  # another process (a queued experiment) created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, params: dict, tags: dict, run_id: str | None = None) -> str | None:
        return self._call("start", self._start, params, tags, run_id)

    def _start(self, params: dict, tags: dict, run_id: str | None) -> str:
        from mlflow.entities import Param, RunTag

        self._logged, self._images = {}, None
        if run_id and self._exists(run_id):
            self.run_id, self._fresh = run_id, False
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "catgan.resumed", "true")
            return run_id
        tags = {k: str(v) for k, v in tags.items()}
        if STUDY_TAG in tags:
            parent = self.study_run(tags[STUDY_TAG])
            if parent:
                tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.run_id, self._fresh = run.info.run_id, True
        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag("catgan.resumed", "false")])
        return self.run_id

    def study_run(self, study: str) -> str | None:
        """The parent run of study ``study``, if `catgan study` made one."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study}'")
        return runs[0].info.run_id if runs else None

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # MlflowException for an unknown id, whatever the store
            return False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", self._log, [(k, v, step) for k, v in metrics.items()])

    def log_rows(self, rows: list[dict[str, float]], step_key: str, columns: tuple[str, ...],
                 prefix: str = "") -> None:
        triples = [(prefix + k, row[k], int(row[step_key])) for row in rows for k in columns
                   if row.get(k) is not None]
        self._call("log_rows", self._log, triples)

    def _log(self, triples: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        new = [(k, float(v), step) for k, v, step in triples if (step, float(v)) not in self._history(k)]
        now = int(time.time() * 1000)
        for i in range(0, len(new), _BATCH):
            chunk = new[i:i + _BATCH]
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v, step in chunk])
            for k, v, step in chunk:
                self._logged[k].add((step, v))

    def _history(self, key: str) -> set[tuple[int, float]]:
        if key not in self._logged:
            self._logged[key] = set() if self._fresh else {
                (m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)}
        return self._logged[key]

    def log_image(self, image: Any, key: str, step: int) -> None:
        self._call("log_image", self._log_image, image, key, step)

    def _log_image(self, image: Any, key: str, step: int) -> None:
        if self._images is None:
            self._images = set() if self._fresh else self._stored_images()
        if (key, step) not in self._images:
            self.client.log_image(self.run_id, image, key=key, step=step)
            self._images.add((key, step))

    def _stored_images(self) -> set[tuple[str, int]]:
        # MLflow writes images/<key>+step+<step>+timestamp+<ms>+<uuid>.png, then the +compressed.webp
        # preview: an image counts as logged once its preview, written last, is there.
        found = set()
        for item in self.client.list_artifacts(self.run_id, "images"):
            match = _IMAGE_PREVIEW.fullmatch(Path(item.path).name)
            if match:
                found.add((match["key"].replace("~", "/"), int(match["step"])))
        return found

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set_tags", self._set_tags, tags)

    def _set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        if self.failure is None:
            self._call("finish", self.client.set_terminated, self.run_id, status=status)
        if self.failure is not None:
            log.error("MLflow run %s in %s is incomplete and left unfinished: tracking stopped at %s; "
                      "%d later call(s) were skipped. The stage's outputs and checkpoints are complete",
                      self.run_id, self.uri, self.failure, self._skipped)
            self._skipped = 0

    def _call(self, what: str, func, *args, **kwargs):
        """``func(*args, **kwargs)``, or None once the store has failed."""
        if self.failure is not None:
            self._skipped += 1
            return None
        try:
            return func(*args, **kwargs)
        except Exception as err:  # whatever the store raises, training must go on
            self.failure = f"{what} ({_root_cause(err)})"
            log.error("MLflow tracking store %s failed in %s; tracking is off for the rest of "
                      "this stage, which carries on and writes its outputs", self.uri, self.failure)
            return None


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


_LOCK_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)  # seconds, about 30 s in all with jitter
# Its own generator: retries must not move the global RNGs that checkpoints save and restore.
_jitter = random.Random()
_IMAGE_PREVIEW = re.compile(r"(?P<key>.+)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%]\d+[+%][^+%]+"
                            r"[+%]compressed\.webp")


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Hold an exclusive lock beside a SQLite store while opening it.

    MLflow creates and migrates a SQLite store's tables the first time a client opens it; two
    processes doing so at once (experiments queued with ``dvc queue start -j 2``) both fail.
    """
    if fcntl is None or not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + "-lock"), "a") as fh:  # -lock: beside SQLite's own -journal
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _locked(err: BaseException | None) -> bool:
    """Whether SQLite said "database is locked" anywhere in the exception's chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if "database is locked" in str(err) or "database table is locked" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _root_cause(err: BaseException) -> str:
    """The innermost error, as "Type: first line": MLflow wraps SQLAlchemy, which wraps sqlite3."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "orig", None) or err.__cause__ or err.__context__
        if not isinstance(inner, BaseException):
            break
        err = inner
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else ""


class _DropStoreErrors(logging.Filter):
    """MLflow logs a traceback for every SQLite error; the tracker reports them in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SQLAlchemy database error")


def _quiet_mlflow_store_errors() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropStoreErrors) for f in logger.filters):
        logger.addFilter(_DropStoreErrors())


def make_tracker(cfg: TrackingConfig) -> NullTracker:
    if not cfg.enabled:
        return NullTracker()
    root = project_root()
    return MlflowTracker(tracking_uri(cfg, root), cfg.experiment, root / "mlartifacts")


def open_run(cfg: TrackingConfig, run_id: str | None) -> NullTracker:
    """The train stage's run, for later stages to log into; a no-op when there is none."""
    tracker = make_tracker(cfg)
    if run_id and isinstance(tracker, MlflowTracker) and tracker._exists(run_id):
        tracker.run_id = run_id
        return tracker
    return NullTracker()


def git_commit(root: Path | None = None) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run_tags(params, data_hash: str) -> dict:
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {"variant": params.model.variant, "seed": params.train.seed, "git_commit": git_commit(),
            "dvc_exp_name": exp_name, "data_hash": data_hash,
            "mlflow.runName": exp_name or f"{params.model.variant}-seed{params.train.seed}"}
    if params.tracking.study:
        tags[STUDY_TAG] = params.tracking.study
    return tags
