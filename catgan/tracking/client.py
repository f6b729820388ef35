"""MLflow tracking of one run through the client API (no global run state), imported lazily."""
from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from catgan.config import TrackingConfig, project_root
from catgan.errors import UserError
from catgan.tracking.runmeta import ROLE_TAG, STUDY_TAG
from catgan.tracking.store import first_line, is_http, open_client, redact, root_cause, tracking_uri
from catgan.training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's limit of metrics per log_batch call
RESEND_AFTER = 10.0  # seconds between tries of a store that failed: each costs a bounded HTTP retry
# Opens the UI on the runs table (MLflow's "model training" kind), not on its GenAI traces view.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
_DIGEST = 36  # MLflow's dataset digest column holds 36 characters
_IMAGE_PREVIEW = re.compile(r"(?P<key>.+)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%]\d+[+%][^+%]+"
                            r"[+%]compressed\.webp")


class MlflowTracker(Tracker):
    """One MLflow run, written so that training outlives its tracking.

    Logging is idempotent: a metric value already stored at its step, or a ``key``/``step`` image,
    is not logged again, so a run resumed after a kill can re-log its epochs without duplicates.
    A locked SQLite store is waited for (``Retrying``). Any other failure is logged once as an
    ERROR; from then on calls are kept, in order, and tried again every ``RESEND_AFTER`` seconds
    (a tracking server restarting), against what the store then holds, so each value lands once.
    ``finish`` tries once more, then reports a run it could not complete, and does not close it.
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path, tags: dict | None = None):
        self.uri = uri
        self.tags = tags or {}  # every run this tracker starts: what names it (runmeta.run_tags)
        self.run_id = None
        self.failure: str | None = None
        self._pending: list[tuple[str, Callable[[], Any]]] = []
        self._resend_at = 0.0
        self._fresh = False  # a run this tracker created holds nothing yet: no need to look
        self._logged: dict[str, set[tuple[int, float]]] = {}
        self._images: set[tuple[str, int]] | None = None
        self.client = open_client(uri)
        try:
            self.experiment_id = self._experiment(experiment, artifact_root)
        except Exception as err:
            raise UserError(f"MLflow tracking store {redact(uri)} has no usable experiment "
                            f"'{experiment}' ({type(err).__name__}: {redact(first_line(err))}); fix "
                            "tracking.experiment or tracking.uri") from None

    def _experiment(self, name: str, artifact_root: Path) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        try:
            # A tracking server keeps the artifacts it serves: a local folder would be this machine's.
            location = None if is_http(self.uri) else artifact_root.resolve().as_uri()
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except Exception:  # another process (a queued experiment) created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, params: dict, tags: dict, run_id: str | None = None) -> str | None:
        return self._call("start", lambda: self._start(params, tags, run_id))

    def _start(self, params: dict, tags: dict, run_id: str | None) -> str:
        from mlflow.entities import Param, RunTag

        self._logged, self._images = {}, None
        if run_id and self._exists(run_id):
            self.run_id, self._fresh = run_id, False
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "catgan.resumed", "true")
            return run_id
        tags = {k: str(v) for k, v in {**self.tags, **tags}.items()}
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
        triples = [(k, v, step) for k, v in metrics.items()]
        self._call("log_metrics", lambda: self._log(triples))

    def log_rows(self, rows: list[dict[str, float]], step_key: str, columns: tuple[str, ...],
                 prefix: str = "") -> None:
        triples = [(prefix + k, row[k], int(row[step_key])) for row in rows for k in columns
                   if row.get(k) is not None]
        self._call("log_rows", lambda: self._log(triples))

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
        self._call("log_image", lambda: self._log_image(image, key, step))

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
        self._call("log_text", lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact",
                   lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set_tags", lambda: self._set_tags(tags))

    def _set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_model(self, model, name: str, signature, input_example) -> None:
        """``model`` as an MLflow PyTorch model under artifact path ``name``: torch.export's pt2
        format (no pickled code), loadable with mlflow.pytorch.load_model and as a pyfunc."""
        self._call("log_model", lambda: self._log_model(model, name, signature, input_example))

    def _log_model(self, model, name: str, signature, input_example) -> None:
        import mlflow.pytorch

        # Listed, not inferred: inference loads the model again in a subprocess, seconds per run.
        requirements = [f"{pkg}=={metadata.version(pkg)}" for pkg in ("mlflow", "numpy", "torch")]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            mlflow.pytorch.save_model(model, folder, signature=signature, input_example=input_example,
                                      serialization_format="pt2", pip_requirements=requirements)
            self.client.log_artifacts(self.run_id, str(folder), name)

    def log_dataset(self, name: str, digest: str, source: dict) -> None:
        """What the run trained on, for the UI's Dataset column (the full digest is a tag too)."""
        self._call("log_dataset", lambda: self._log_dataset(name, digest, source))

    def _log_dataset(self, name: str, digest: str, source: dict) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest[:_DIGEST], source_type="dvc",
                          source=json.dumps(source, sort_keys=True))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag("mlflow.data.context", "training")])])

    def finish(self, status: str | None = "FINISHED", stage: str = "train") -> None:
        """A last try of the kept calls, then the run's ``status``; None leaves the status to the
        train stage, which owns the run. A run left incomplete is reported in one line."""
        self._resend_at = 0.0  # the last chance: try the store whatever the interval
        owned = status is not None
        if owned:
            self._call("finish", lambda: self.client.set_terminated(self.run_id, status=status))
        elif self._pending:
            self._resend()
        if not self._pending:
            return
        log.error("MLflow run %s in %s is incomplete%s: tracking stopped at %s, and %d call(s) from "
                  "then on were not sent. The stage's outputs%s are complete; once the store "
                  "answers, re-send the run with `dvc repro --force --single-item %s` (%s)",
                  self.run_id, redact(self.uri), " and left unfinished" if owned else "",
                  self.failure, len(self._pending), " and checkpoints" if owned else "", stage,
                  "same params: it resumes the finished checkpoint and logs only what the run lacks"
                  if owned else "the same values: the run keeps each once")
        self._pending = []

    def _call(self, what: str, func: Callable[[], Any]) -> Any:
        """``func()``; None, and ``func`` kept for later, while the store fails."""
        if self._pending and not self._resend():
            self._pending.append((what, func))
            return None
        try:
            return func()
        except Exception as err:  # whatever the store raises, training must go on
            self.failure = f"{what} ({redact(root_cause(err))})"
            log.error("MLflow tracking store %s failed in %s; this stage carries on and writes its "
                      "outputs, and tries the store again every %.0f s", redact(self.uri),
                      self.failure, RESEND_AFTER)
            self._pending.append((what, func))
            self._resend_at = time.monotonic() + RESEND_AFTER
            return None

    def _resend(self) -> bool:
        """Send the kept calls in order if it is time to try; whether none is left."""
        if time.monotonic() < self._resend_at:
            return False
        # A failed call may have reached the store before its answer was lost: from now on the
        # checks against duplicates ask the store what it holds.
        self._fresh, self._logged, self._images = False, {}, None
        count = len(self._pending)
        while self._pending:
            try:
                self._pending[0][1]()
            except Exception:
                self._resend_at = time.monotonic() + RESEND_AFTER
                return False
            self._pending.pop(0)
        log.warning("MLflow tracking store %s answers again: re-sent the %d call(s) kept since %s",
                    redact(self.uri), count, self.failure)
        self.failure = None
        return True


def make_tracker(cfg: TrackingConfig, tags: dict | None = None) -> Tracker:
    if not cfg.enabled:
        return NullTracker()
    root = project_root()
    return MlflowTracker(tracking_uri(cfg, root), cfg.experiment, root / "mlartifacts", tags)


def open_run(cfg: TrackingConfig, run_id: str | None) -> Tracker:
    """The train stage's run, for later stages to log into; a no-op when there is none."""
    tracker = make_tracker(cfg)
    if run_id and isinstance(tracker, MlflowTracker) and tracker._exists(run_id):
        tracker.run_id = run_id
        return tracker
    return NullTracker()
