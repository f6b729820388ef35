"""What the training loop logs to. This base logs nothing; catgan.tracking.client's MlflowTracker
logs to MLflow. The loop knows only this interface, so training never imports the tracking code:
the train stage picks the tracker and hands it in."""
from __future__ import annotations

from pathlib import Path


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

    def log_model(self, model, name: str, signature, input_example) -> None: ...

    def log_dataset(self, name: str, digest: str, source: dict) -> None: ...

    def finish(self, status: str | None = "FINISHED", stage: str = "train") -> None: ...
