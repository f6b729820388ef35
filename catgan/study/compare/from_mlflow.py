"""Finished runs of an MLflow experiment."""
from __future__ import annotations

from catgan.study.compare.runs import Record, group, latest_per_seed, record
from catgan.tracking.store import finished_runs
from catgan.training.outputs import COLUMNS, EPOCH_KEY


def as_in_dvc(metrics: dict[str, float]) -> dict[str, float]:
    """A run's latest values as ``dvc exp show`` gives them: the last epoch's ``epoch/<column>`` is
    ``train.<column>`` (metrics/train.json), eval.* keep their names (metrics/eval.json). The rest
    are curves, not final metrics (the per-step values and the per-epoch quality check: DVC keeps
    them as plots, steps.csv and history.csv), and are left out."""
    renamed = {f"{EPOCH_KEY}{c}": f"train.{c}" for c in COLUMNS}
    return {renamed.get(k, k): v for k, v in metrics.items()
            if k in renamed or k.startswith("eval.")}


def collect(uri: str, experiment: str) -> list[Record]:
    """Finished runs of MLflow ``experiment``, newest first, with each metric's latest value."""
    _, runs = finished_runs(uri, experiment)
    records, where = [], f"MLflow experiment '{experiment}'"
    for run in runs:
        p = run.data.params
        rec = record(run.info.run_name or run.info.run_id, group(p),
                     p.get("train.seed"), as_in_dvc(run.data.metrics), where)
        if rec and rec.metrics:
            records.append(rec)
    return latest_per_seed(records, where)
