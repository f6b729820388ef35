"""The MLflow store vanishing mid-run: training finishes with every checkpoint and output, and the
loss is reported in one ERROR line naming the store and what failed, then once more by finish()."""
from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from stagerun import empty_store, make_project, start, wait_until

from catgan.config import TrackingConfig
from catgan.tracking.client import MlflowTracker, open_run
from catgan.tracking.store import open_client
from catgan.training import checkpoint


@pytest.mark.slow  # a train stage process logging to MLflow for seconds: out of the quick loop
def test_train_stage_outlives_its_store_folder_being_deleted(tiny_data, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{empty_store(store)}"
    project = make_project(tmp_path / "project", {"train": {"epochs": 3},
                                                  "tracking": {"enabled": True, "uri": uri}},
                           data=tiny_data)
    log = project / "train.log"
    proc = start(project, "train", log)
    assert wait_until(lambda: any(project.glob("checkpoints/*/last.pt")), proc)
    shutil.rmtree(store)  # as an unmounted network drive would: epochs 2 and 3 are still to come
    assert proc.wait() == 0, log.read_text()[-3000:]

    text = log.read_text()
    failed = [line for line in text.splitlines() if f"MLflow tracking store {uri} failed in " in line]
    assert len(failed) == 1 and failed[0].startswith("ERROR catgan.tracking.client:"), failed
    assert "OperationalError" in failed[0]
    incomplete = [line for line in text.splitlines() if "is incomplete and left unfinished" in line]
    assert len(incomplete) == 1 and incomplete[0].startswith("ERROR catgan.tracking.client: MLflow run ")
    assert "Traceback" not in text

    assert checkpoint.load(next(project.glob("checkpoints/*/last.pt")))["epoch"] == 3
    assert json.loads((project / "metrics/train.json").read_text())["epoch"] == 3
    assert [row["epoch"] for row in csv.DictReader((project / "metrics/history.csv").open())] == \
        ["1", "2", "3"]
    assert len(list((project / "samples").glob("epoch_*.png"))) == 4
    for name in ("generator.pt", "discriminator.pt"):
        assert torch.load(project / "models" / name, weights_only=True)


def test_after_a_failure_calls_are_kept_and_finish_reports_those_never_sent(tmp_path, caplog):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{empty_store(store)}"
    tracker = MlflowTracker(uri, "faults", tmp_path / "artifacts")
    run_id = tracker.start({"lr": 0.1}, {"variant": "fused"})
    tracker.log_metrics({"loss_d": 1.0}, step=1)
    shutil.rmtree(store)
    with caplog.at_level(logging.ERROR, logger="catgan.tracking.client"):
        tracker.log_metrics({"loss_d": 0.5}, step=2)
        tracker.log_rows([{"step": 3, "loss_d": 0.4}], "step", ("loss_d",), prefix="step_")
        tracker.log_image(Image.new("RGB", (8, 8)), "samples", 2)
        tracker.log_text("table", "layers.md")
        tracker.log_artifact(tmp_path / "missing.png", "report")
        tracker.set_tags({"eval.note": "x"})
        tracker.finish()
    errors = [r.getMessage() for r in caplog.records if r.name == "catgan.tracking.client"]
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"MLflow tracking store {uri} failed in log_metrics (OperationalError: ")
    assert errors[1].startswith(f"MLflow run {run_id} in {uri} is incomplete and left unfinished: "
                                "tracking stopped at log_metrics")
    assert "7 call(s) from then on were not sent" in errors[1]
    assert tracker.run_id == run_id and tracker.failure.startswith("log_metrics")
    assert not Path(store).exists()  # nothing re-created the vanished store


def _finished_run(tmp_path: Path, monkeypatch) -> tuple[Path, str, str]:
    """A store holding one run the train stage finished; the cwd as a later stage's."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{empty_store(store)}"
    trainer = MlflowTracker(uri, "faults", tmp_path / "artifacts")
    run_id = trainer.start({"lr": 0.1}, {"variant": "fused"})
    trainer.finish()
    return store, uri, run_id


def test_a_later_stage_resends_its_kept_calls_at_its_end_and_leaves_the_run_finished(
        tmp_path, monkeypatch, caplog):
    store, uri, run_id = _finished_run(tmp_path, monkeypatch)
    evaluate = open_run(TrackingConfig(experiment="faults", uri=uri), run_id)
    away = store.rename(tmp_path / "away")  # the store is gone while the stage logs
    with caplog.at_level(logging.ERROR, logger="catgan.tracking.client"):
        evaluate.log_metrics({"eval.swd": 1.5}, step=3)
        evaluate.set_tags({"eval.note": "x"})
        away.rename(store)
        evaluate.finish(None, "evaluate")
    errors = [r.getMessage() for r in caplog.records if r.name == "catgan.tracking.client"]
    assert len(errors) == 1 and "failed in log_metrics" in errors[0], errors
    run = open_client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval.swd"] == 1.5 and run.data.tags["eval.note"] == "x"


def test_a_later_stage_that_cannot_resend_names_itself_and_leaves_the_status_alone(
        tmp_path, monkeypatch, caplog):
    store, uri, run_id = _finished_run(tmp_path, monkeypatch)
    plot = open_run(TrackingConfig(experiment="faults", uri=uri), run_id)
    shutil.rmtree(store)
    with caplog.at_level(logging.ERROR, logger="catgan.tracking.client"):
        plot.log_artifact(tmp_path / "index.html", "report")
        plot.log_artifact(tmp_path / "losses.png", "report")
        plot.finish(None, "plot")
    errors = [r.getMessage() for r in caplog.records if r.name == "catgan.tracking.client"]
    assert len(errors) == 2, errors
    assert errors[1].startswith(f"MLflow run {run_id} in {uri} is incomplete: tracking stopped "
                                "at log_artifact")
    assert "2 call(s) from then on were not sent" in errors[1]
    assert "`dvc repro --force --single-item plot`" in errors[1]
    assert "finish" not in plot.failure  # no attempt to close a run the train stage owns
