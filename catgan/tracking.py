"""MLflow tracking through its client API (no global run state), imported lazily.

The store defaults to SQLite ``mlflow.db`` at the project root with artifacts beside it, as absolute
URIs resolved from ``DVC_ROOT``, so temp and queued DVC experiments land in the workspace's store.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from catgan.config import TrackingConfig, project_root
from catgan.errors import UserError

_BATCH = 1000  # MLflow's limit of metrics per log_batch call


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
    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_root.resolve().as_uri())
        except Exception as err:
            raise UserError(
                f"MLflow tracking store {uri} is unreachable ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); fix tracking.uri or "
                "MLFLOW_TRACKING_URI, or set tracking.enabled: false") from None
        self.run_id = None

    def start(self, params: dict, tags: dict, run_id: str | None = None) -> str:
        from mlflow.entities import Param, RunTag

        if run_id and self._exists(run_id):
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "catgan.resumed", "true")
            return run_id
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag("catgan.resumed", "false")])
        return self.run_id

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # MlflowException for an unknown id, whatever the store
            return False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._log([(k, v, step) for k, v in metrics.items()])

    def log_rows(self, rows: list[dict[str, float]], step_key: str, columns: tuple[str, ...],
                 prefix: str = "") -> None:
        self._log([(prefix + k, row[k], int(row[step_key])) for row in rows for k in columns])

    def _log(self, triples: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v, step in triples]
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + _BATCH])

    def log_image(self, image: Any, key: str, step: int) -> None:
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


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
    return {"variant": params.model.variant, "seed": params.train.seed, "git_commit": git_commit(),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""), "data_hash": data_hash,
            "mlflow.runName": f"{params.model.variant}-seed{params.train.seed}"}
