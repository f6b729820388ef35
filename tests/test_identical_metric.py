"""A metric with the same value in every seed (the real set's own diversity): catgan compare says
"identical in every seed" instead of an interval of nan, and nothing warns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from catgan.study.compare.render import render_text, to_dict
from catgan.study.compare.runs import Record
from catgan.study.compare.stats import describe, summarize

ROOT = Path(__file__).resolve().parents[1]
REAL = "eval.diversity.diversity_real"
VALUES = {"baseline": [30.1, 33.0, 31.4], "fused": [29.0, 35.5, 32.2]}


def records() -> list[Record]:
    return [Record(f"{v}-{seed}", v, seed, {REAL: 38.696, "eval.swd.swd_avg": x})
            for v, xs in VALUES.items() for seed, x in enumerate(xs)]


def test_an_identical_metric_has_a_zero_width_interval_and_says_so():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's RuntimeWarning on a zero scale would raise here
        stat = describe([0, 1, 2], [38.696] * 3, 0.95)
        summary = summarize(records())
        text = render_text(summary)
    assert (stat.std, stat.ci, stat.identical) == (0.0, (38.696, 38.696), True)
    assert not describe([0, 1], [1.0, 2.0], 0.95).identical
    assert not describe([0], [1.0], 0.95).identical  # one seed: no spread measured at all
    line = next(line for line in text.splitlines() if line.startswith(REAL))
    assert line.split()[1:] == ["38.7", "(3,", "identical", "in", "every", "seed)"] * 2 + [
        "0", "[0,", "0]", "identical", "in", "every", "seed"]
    assert "nan" not in text
    real = to_dict(summary)["metrics"][REAL]
    assert real["baseline"]["ci"] == [38.696, 38.696] and real["difference"]["interval"] == [0, 0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # MLflow's store, in this process
def test_catgan_compare_prints_no_warning(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("catgan")
    for rec in records():
        run = client.create_run(exp, run_name=rec.name)
        client.log_batch(run.info.run_id, params=[Param("model.variant", rec.group),
                                                  Param("train.seed", str(rec.seed))],
                         metrics=[Metric(k, v, 0, 1) for k, v in rec.metrics.items()])
        client.set_terminated(run.info.run_id)
    proc = subprocess.run([sys.executable, "-c", "import sys; from catgan.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "compare", "--from", "mlflow",
                           "--tracking-uri", uri, "--experiment", "catgan", "--out",
                           str(tmp_path / "cmp")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert "identical in every seed" in proc.stdout and "nan" not in proc.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["metrics"][REAL]["verdict"] == "identical in every seed"
