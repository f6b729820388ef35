"""kill -9 of the real train stage, MLflow on, at seeded random moments, re-running it each time.

Every re-run resumes from the last complete epoch; the end is bit for bit an uninterrupted run's, and
the MLflow store holds one finished run with each epoch's metrics exactly once. The tracker's
idempotent logging, which makes that possible, is also tested on its own.
"""
from __future__ import annotations

import csv
import json
import random
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from stagerun import (
    TIMEOUT,
    assert_intact_checkpoints,
    empty_store,
    kill9,
    make_project,
    ok,
    prepared,
    run,
    same_state_dicts,
    start,
    temp_leftovers,
    wait_until,
)

from catgan.config import TrackingConfig
from catgan.tracking.client import MlflowTracker, open_run
from catgan.training.loop import COLUMNS, train

KILLS = 10
CHAINS = 2  # kill chains side by side, KILLS // CHAINS kills each: the two cores work at once
EPOCHS = 4
SEED = 7
SETTINGS = {"train": {"epochs": EPOCHS}, "tracking": {"enabled": True}}
# Start-up (imports, store connection) is over once the log says it resumes or starts an epoch.
READY = re.compile(rb"resuming from|epoch \d+/")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(folder, a project holding tiny prepared data, an initialised empty MLflow store)."""
    root = tmp_path_factory.mktemp("killtrain")
    data = prepared(root / "data")
    return root, data, empty_store(root)


def ready(log: Path) -> bool:
    return READY.search(log.read_bytes()) is not None


@pytest.mark.slow  # two kill chains of a few minutes of CPU: out of the quick loop
def test_kill_9_at_ten_random_moments_then_rerun_ends_exactly_with_one_clean_mlflow_run(lab):
    root, data, store = lab
    whole = make_project(root / "whole", SETTINGS, data=data, store=store)
    began = time.monotonic()
    proc = start(whole, "train", whole / "train.log")
    wait_until(lambda: ready(whole / "train.log"), proc)
    started = time.monotonic()
    assert proc.wait(TIMEOUT) == 0, (whole / "train.log").read_text()[-3000:]
    # Kill moments fall anywhere in the work after start-up: steps, grids, checkpoints, MLflow calls.
    span = time.monotonic() - started
    rng = random.Random(SEED)
    plans = [(make_project(root / f"cut{c}", SETTINGS, data=data, store=store),
              [rng.random() * span for _ in range(KILLS // CHAINS)]) for c in range(CHAINS)]
    with ThreadPoolExecutor(CHAINS) as pool:
        notes = list(pool.map(lambda plan: kill_and_rerun(*plan), plans))
    print(f"start-up {started - began:.1f} s, then {span:.1f} s; kills (delay s, exit, checkpoint epoch "
          f"after, resumed): {notes}")

    for (cut, _), chain in zip(plans, notes, strict=True):
        assert any(resumed for *_, resumed in chain), f"no run resumed in {cut}: {chain}"
        for name in ("generator.pt", "discriminator.pt"):
            assert same_state_dicts(whole / "models" / name, cut / "models" / name), name
        for name in ("history.csv", "steps.csv"):
            assert (cut / "metrics" / name).read_text() == (whole / "metrics" / name).read_text()
        for folder in (newest_checkpoint(cut).parent, cut / "models", cut / "metrics", cut / "samples"):
            assert not temp_leftovers(folder), temp_leftovers(folder)
        assert_one_complete_run(cut)


def kill_and_rerun(project: Path, delays: list[float]) -> list[tuple]:
    """Start, kill -9 after each delay past start-up, check nothing half-written shows; then finish."""
    notes = []
    for n, delay in enumerate(delays):
        log = project / f"train.{n}.log"
        proc = start(project, "train", log)
        wait_until(lambda log=log: ready(log), proc)
        time.sleep(delay)
        code = kill9(proc)
        assert code in (-9, 0), log.read_text()[-3000:]
        assert_intact_checkpoints(project)
        for path in (project / "models").glob("*.pt"):
            torch.load(path, weights_only=True)
        for path in (project / "metrics").glob("*.json"):
            json.loads(path.read_text())
        last = newest_checkpoint(project)
        epoch = torch.load(last, weights_only=True)["epoch"] if last else 0
        # A kill mid-write may leave a checkpoint temp file: allowed, as the rerun must remove it.
        notes.append((round(delay, 2), code, epoch, "resuming from" in log.read_text()))
    final = ok(run(project, "train"))
    notes.append(("final", 0, EPOCHS, "resuming from" in final.stderr))
    return notes


def newest_checkpoint(project: Path) -> Path | None:
    """The last.pt in use (an edit of the training code mid-test starts a new folder)."""
    return max(project.glob("checkpoints/*/last.pt"), key=lambda p: p.stat().st_mtime, default=None)


def assert_one_complete_run(project: Path) -> None:
    """One FINISHED run, the one models/run.json names, with every value of the CSVs exactly once;
    runs abandoned before their first checkpoint stay RUNNING and hold no metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("catgan").experiment_id])
    run_id = json.loads((project / "models/run.json").read_text())["mlflow_run_id"]
    assert [(r.info.run_id, r.info.status) for r in runs if r.info.status != "RUNNING"] == \
        [(run_id, "FINISHED")]
    assert all(not r.data.metrics for r in runs if r.info.run_id != run_id)

    def stored(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    for csv_name, step_key, prefix in (("history.csv", "epoch", "epoch/"), ("steps.csv", "step", "step/")):
        rows = list(csv.DictReader((project / "metrics" / csv_name).open()))
        for col in COLUMNS:
            assert stored(prefix + col) == [(int(r[step_key]), float(r[col])) for r in rows], prefix + col
    previews = [Path(a.path).name for a in client.list_artifacts(run_id, "images")
                if a.path.endswith("+compressed.webp")]
    assert sorted(int(name.split("+")[2]) for name in previews) == list(range(EPOCHS + 1))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    empty_store(folder)
    return folder


def tracker(folder: Path) -> MlflowTracker:
    """A new tracker on the store, as a new stage process would make."""
    return MlflowTracker(f"sqlite:///{folder / 'mlflow.db'}", "faults", folder / "artifacts")


def history(t: MlflowTracker, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in t.client.get_metric_history(run_id, key))


def test_a_resumed_run_relogging_its_history_stores_each_epoch_once(store_dir):
    rows = [{"epoch": e, "loss": 0.25 * e} for e in (1, 2, 3)]
    first = tracker(store_dir)
    run_id = first.start({"lr": 0.1}, {"variant": "fused"})
    first.log_rows(rows[:2], "epoch", ("loss",))
    first.log_metrics({"loss": rows[1]["loss"]}, step=2)
    # killed here: epoch 3 is in the checkpoint but never reached MLflow
    resumed = tracker(store_dir)
    assert resumed.start({"lr": 0.1}, {"variant": "fused"}, run_id=run_id) == run_id
    assert resumed.client.get_run(run_id).info.status == "RUNNING"
    resumed.log_rows(rows, "epoch", ("loss",))  # what a resumed train() logs from the checkpoint
    resumed.log_metrics({"loss": rows[2]["loss"]}, step=3)
    resumed.finish()
    assert history(resumed, run_id, "loss") == [(1, 0.25), (2, 0.5), (3, 0.75)]
    run_info = resumed.client.get_run(run_id)
    assert run_info.info.status == "FINISHED" and run_info.data.tags["catgan.resumed"] == "true"


def test_a_new_value_at_a_logged_step_is_kept_and_wins(store_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(store_dir))
    first = tracker(store_dir)
    run_id = first.start({}, {})
    first.log_metrics({"eval.swd": 1.5}, step=4)
    later = open_run(TrackingConfig(experiment="faults", uri=f"sqlite:///{store_dir / 'mlflow.db'}"),
                     run_id)  # as the evaluate stage opens the train stage's run
    assert later.run_id == run_id
    later.log_metrics({"eval.swd": 1.5}, step=4)  # evaluate re-run, same result
    later.log_metrics({"eval.swd": 2.5}, step=4)  # evaluate re-run with other eval params
    assert history(later, run_id, "eval.swd") == [(4, 1.5), (4, 2.5)]
    assert later.client.get_run(run_id).data.metrics["eval.swd"] == 2.5


def test_a_grid_image_is_logged_once_per_step_across_resumes(store_dir):
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    first = tracker(store_dir)
    run_id = first.start({}, {})
    first.log_image(image, "samples", 0)
    first.log_image(image, "samples", 1)
    resumed = tracker(store_dir)
    resumed.start({}, {}, run_id=run_id)
    resumed.log_image(image, "samples", 1)  # the epoch's grid again, after a kill before its checkpoint
    resumed.log_image(image, "samples", 2)
    names = [Path(a.path).name for a in resumed.client.list_artifacts(run_id, "images")]
    assert sorted(int(n.split("+")[2]) for n in names if n.endswith("+compressed.webp")) == [0, 1, 2]
    assert len([n for n in names if n.endswith(".png")]) == 3


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_resumed_training_logs_the_epoch_its_checkpoint_holds_but_mlflow_lost(store_dir, tiny_params,
                                                                               tiny_images, tmp_path):
    first = train(tiny_params(train={"epochs": 2}), tiny_images, "d", tmp_path, tracker(store_dir))
    # What a kill after epoch 2's checkpoint, before its MLflow calls, leaves in the store.
    with sqlite3.connect(store_dir / "mlflow.db") as db:
        db.execute("delete from metrics where run_uuid = ? and step > ?", (first.run_id, 1))
    resumed = train(tiny_params(train={"epochs": 3}), tiny_images, "d", tmp_path, tracker(store_dir))
    assert resumed.run_id == first.run_id and resumed.resumed_from == 2
    check = tracker(store_dir)
    for col in COLUMNS:
        assert history(check, first.run_id, "epoch/" + col) == [(r["epoch"], r[col]) for r in resumed.history]
        assert history(check, first.run_id, "step/" + col) == [(r["step"], r[col]) for r in resumed.steps]
