"""MLflow tracking into a real temporary SQLite store."""
from __future__ import annotations

import pytest

from catgan.config import TrackingConfig
from catgan.errors import UserError
from catgan.tracking.client import MlflowTracker
from catgan.tracking.runmeta import run_tags
from catgan.tracking.store import tracking_uri
from catgan.training.loop import COLUMNS, train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module: creating MLflow's tables takes seconds."""
    folder = tmp_path_factory.mktemp("mlflow")
    return MlflowTracker(f"sqlite:///{folder / 'mlflow.db'}", "catgan-test", folder / "artifacts")


def test_run_holds_params_metrics_images_and_tags(store, tiny_params, tiny_images, tmp_path):
    params = tiny_params(tracking={"enabled": True})
    store.tags = run_tags(params, "abc123")  # as the train stage names its run
    result = train(params, tiny_images, "abc123", tmp_path / "ck", store)
    store.finish()
    run = store.client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.variant"] == "fused"
    assert run.data.params["train.batch_size"] == "4"
    assert run.data.tags["variant"] == "fused" and run.data.tags["data_hash"] == "abc123"
    assert run.data.tags["seed"] == "0" and run.data.tags["mlflow.runName"] == "fused-seed0"
    assert run.data.tags["data_images"] == str(len(tiny_images))  # the loop's own tags join them
    for col in COLUMNS:
        epochs = store.client.get_metric_history(result.run_id, "epoch/" + col)
        assert [m.step for m in epochs] == [1, 2]
        assert [m.value for m in epochs] == pytest.approx([r[col] for r in result.history])
        assert len(store.client.get_metric_history(result.run_id, "step/" + col)) == 4
    images = store.client.list_artifacts(result.run_id, "images")
    assert len([f for f in images if f.path.endswith(".png")]) == 3  # epochs 0, 1 and 2


def test_resumed_training_continues_the_same_run(store, tiny_params, tiny_images, tmp_path):
    first = train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path / "ck", store)
    second = train(tiny_params(train={"epochs": 2}), tiny_images, "d", tmp_path / "ck", store)
    assert second.run_id == first.run_id
    assert [m.step for m in store.client.get_metric_history(first.run_id, "epoch/loss_d")] == [1, 2]


def test_default_store_is_sqlite_at_the_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri(TrackingConfig()) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri(TrackingConfig()) == "sqlite:////elsewhere.db"


def test_unreachable_store_fails_fast_with_a_clear_message(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(UserError, match="unreachable.*tracking.enabled: false"):
        MlflowTracker(f"sqlite:///{tmp_path}/a-file/mlflow.db", "x", tmp_path)


def test_per_step_metrics_are_exactly_the_training_columns(store, tiny_params, tiny_images,
                                                           tmp_path):
    result = train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path / "ck", store)
    logged = set(store.client.get_run(result.run_id).data.metrics)
    assert {k for k in logged if k.startswith("step/")} == {"step/" + c for c in COLUMNS}
    # Every key is grouped: the UI shows the epoch/ and step/ curves before anything else.
    assert {k.split("/")[0] for k in logged} == {"epoch", "step"}
