"""A study's MLflow runs written out as run folders: the step count of a run on several processes."""
from __future__ import annotations

import json

import pytest

from catgan.study import export as studyexport
from catgan.tracking.store import open_client


@pytest.mark.parametrize("processes, steps", [(None, 3), ("1", 3), ("2", 2)])
def test_a_run_on_several_processes_drops_the_last_partial_batch(tmp_path, processes, steps):
    """5 images at batch 2: 3 steps an epoch on one process, 2 on several (an uneven last batch
    cannot be split). train.nproc = 1 on each of two nodes is 2 processes: the tag tells."""
    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = {"data_images": "5", "dvc_exp_name": "x", **({"processes": processes} if processes else {})}
    run_id = client.create_run(client.create_experiment("e"), tags=tags).info.run_id
    for key, value in {"train.batch_size": 2, "train.epochs": 1, "train.nproc": 1,
                       "model.variant": "fused", "train.seed": 0}.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "step/loss_d", 0.5, step=1)
    client.set_terminated(run_id)

    studyexport._export_run(client, client.get_run(run_id), tmp_path / "run")
    meta = json.loads((tmp_path / "run/run.json").read_text())
    assert meta["steps"] == steps and meta["images_seen"] == min(5, 2 * steps)


def test_a_runs_loss_and_kind_come_from_its_params_old_or_new(tmp_path):
    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e")
    for i, (params, kind, loss) in enumerate([
        ({"train.loss": "ralsgan", "tracking.arm": "modern"}, "study", "ralsgan"),
        ({"train.loss": "saturating"}, "saturating", "saturating"),
        # Runs from before train.loss named G's loss too: train.loss standard, G's in train.g_loss.
        ({"train.loss": "standard", "train.g_loss": "saturating"}, "saturating", "saturating"),
        ({"train.loss": "standard", "train.g_loss": "non_saturating"}, "study", "non_saturating"),
    ]):
        run_id = client.create_run(experiment, tags={"data_images": "4", "dvc_exp_name": "x"}).info.run_id
        for key, value in {"train.batch_size": 2, "train.epochs": 1, "model.variant": "baseline",
                           "train.seed": 0, **params}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "eval.swd.swd_avg", 40.0)
        client.set_terminated(run_id)

        studyexport._export_run(client, client.get_run(run_id), tmp_path / f"run{i}")
        meta = json.loads((tmp_path / f"run{i}/run.json").read_text())
        assert (meta["kind"], meta["loss"], meta["arm"]) == (
            kind, loss, params.get("tracking.arm", "course-baseline")), params
        assert meta["eval"] == {"swd": {"swd_avg": 40.0}}
