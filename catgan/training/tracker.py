"""What the training loop logs to: the ``Tracker`` interface, every method abstract (a tracker that
lacks one cannot be made); ``NullTracker`` logs nothing, catgan.tracking.client's MlflowTracker to
MLflow. The train stage picks one and hands it in: training never imports the tracking code."""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    run_id: str | None

    @abstractmethod
    def start(self, params: dict, tags: dict, run_id: str | None = None) -> str | None: ...
    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    @abstractmethod
    def log_rows(self, rows: list[dict[str, float]], step_key: str, columns: tuple[str, ...],
                 prefix: str = "") -> None: ...
    @abstractmethod
    def log_image(self, image, key: str, step: int) -> None: ...
    @abstractmethod
    def log_text(self, text: str, artifact_file: str) -> None: ...
    @abstractmethod
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    @abstractmethod
    def set_tags(self, tags: dict[str, str]) -> None: ...
    @abstractmethod
    def log_model(self, model, name: str, signature, input_example) -> None: ...
    @abstractmethod
    def log_dataset(self, name: str, digest: str, source: dict) -> None: ...
    @abstractmethod
    def finish(self, status: str | None = "FINISHED", stage: str = "train") -> None: ...


class NullTracker(Tracker):
    """Tracking switched off: every call does nothing."""

    run_id = None

    def start(self, params, tags, run_id=None): return None
    def log_metrics(self, metrics, step): pass
    def log_rows(self, rows, step_key, columns, prefix=""): pass
    def log_image(self, image, key, step): pass
    def log_text(self, text, artifact_file): pass
    def log_artifact(self, path, artifact_path=None): pass
    def set_tags(self, tags): pass
    def log_model(self, model, name, signature, input_example): pass
    def log_dataset(self, name, digest, source): pass
    def finish(self, status="FINISHED", stage="train"): pass
