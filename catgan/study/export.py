"""A study's MLflow runs written out as a study folder (catgan/study/folder.py) for its page.

Everything comes from the store: per-epoch and per-step metrics, the evaluate stage's metrics, the
per-epoch grids logged as images, params and tags. Run folders of other kinds already in the
study folder (the course loop's parity runs) are left as they are.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

from catgan.config import nested
from catgan.study import arms
from catgan.study.folder import run_meta, write_run, write_study
from catgan.training.loop import steps_per_epoch
from catgan.training.outputs import COLUMNS, EPOCH_KEY, HISTORY_COLUMNS, STEP_KEY

_GRID = re.compile(r"samples[+%]step[+%](?P<step>\d+)[+%]timestamp[+%]\d+[+%][^+%]+\.png")


def export(tracker, study: str, runs: list, out: Path, made_by: dict | None = None) -> Path:
    """Write ``runs`` (MLflow Run objects of ``study``) under ``out``, with ``made_by``
    (catgan.study.provenance.record) in study.json; returns ``out``."""
    client = tracker.client
    # MLflow draws a progress bar per downloaded file: one per grid would drown the study's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for run in runs:
        _export_run(client, run, out / "runs" / run.data.tags["dvc_exp_name"])
    first = runs[0].data
    parent = tracker.study_run(study)
    write_study(out, {
        "name": study,
        "device": first.tags.get("device", "unknown"),
        "data": {"content_hash": first.tags.get("data_hash", ""),
                 "images": int(first.tags.get("data_images", 0)),
                 "source": _source(first.params)},
        "settings": client.get_run(parent).data.params if parent else {},
        "parent_run_id": parent,
        **({"provenance": made_by} if made_by else {}),
    })
    return out


def _source(params: dict) -> str:
    source = params.get("data.source", "")
    return f"{source}: {Path(params['data.path']).name}" if params.get("data.path") else source


def _export_run(client, run, run_dir: Path) -> None:
    run_id, params, tags = run.info.run_id, run.data.params, run.data.tags
    images, batch = int(tags.get("data_images", 0)), int(params["train.batch_size"])
    # train.nproc counts the processes of one node; runs from before the tag ran on one node.
    world = int(tags.get("processes", params.get("train.nproc", 1)))
    per_epoch = steps_per_epoch(images, batch, int(params.get("train.steps_per_epoch", 0)), world)
    epochs = int(params["train.epochs"])
    history = _rows(client, run_id, HISTORY_COLUMNS[1:], "epoch", prefix=EPOCH_KEY)
    steps = _rows(client, run_id, COLUMNS, "step", prefix=STEP_KEY)
    for row in steps:
        row["epoch"] = math.ceil(row["step"] / per_epoch)
    # A run from before arms is its variant's course arm; one from before train.loss named G's
    # loss too has train.loss: standard and G's loss in train.g_loss.
    arm = params.get("tracking.arm") or arms.course_arm(params["model.variant"]).name
    loss = params.get("train.loss", "standard")
    loss = params.get("train.g_loss", "non_saturating") if loss == "standard" else loss
    meta = run_meta(
        "saturating" if loss == "saturating" else "study", arm, int(params["train.seed"]),
        loss=loss, epochs=epochs, steps=epochs * per_epoch, batch_size=batch,
        images_seen=epochs * min(images, per_epoch * batch),
        wall_s=((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
        device=tags.get("device", "unknown"),
        eval=nested({k.removeprefix("eval."): v for k, v in run.data.metrics.items()
                     if k.startswith("eval.")}),
        mlflow_run_id=run_id, dvc_exp_name=tags.get("dvc_exp_name", ""))
    with tempfile.TemporaryDirectory() as tmp:
        write_run(run_dir, meta, history, steps, _grids(client, run_id, Path(tmp)))


def _rows(client, run_id: str, columns, key: str, prefix: str = "") -> list[dict]:
    rows: dict[int, dict] = {}
    for col in columns:
        for m in client.get_metric_history(run_id, prefix + col):
            rows.setdefault(m.step, {key: m.step})[col] = m.value
    return [rows[k] for k in sorted(rows)]


def _grids(client, run_id: str, dest: Path) -> list[Path]:
    """The run's logged grids, downloaded into ``dest`` as epoch_NNN.png."""
    found = []
    for item in client.list_artifacts(run_id, "images"):
        match = _GRID.fullmatch(Path(item.path).name)
        if match:
            local = Path(client.download_artifacts(run_id, item.path, str(dest)))
            found.append(local.rename(dest / f"epoch_{int(match['step']):03d}.png"))
    return sorted(found)
