"""The real `dvc` CLI on a temporary clone of this project, with tiny settings."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_project, env, sh
from dvcqueue import run_queue

pytestmark = pytest.mark.slow



def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory) -> Path:
    """This module's copy of the session's reproduced clone (conftest.reproduced)."""
    return copy_project(reproduced[0], tmp_path_factory.mktemp("clone") / "catgan")


@pytest.fixture(scope="module")
def fused_exp(project: Path) -> str:
    """The experiment fused-exp (model.variant=fused), run in the workspace: what it printed."""
    return sh(project, "dvc", "exp", "run", "--name", "fused-exp", "-S", "model.variant=fused")


def test_repro_runs_all_five_stages_then_nothing(project, reproduced):
    assert ran_stages(reproduced[1]) == ["fetch", "preprocess", "train", "evaluate", "plot"]
    assert ran_stages(sh(project, "dvc", "repro")) == []
    assert "up to date" in sh(project, "dvc", "status")
    assert sh(project, "git", "status", "--porcelain").strip() == ""


def test_exp_run_fused_reruns_only_train_evaluate_plot(project, fused_exp):
    assert ran_stages(fused_exp) == ["train", "evaluate", "plot"], fused_exp
    diff = json.loads(sh(project, "dvc", "exp", "diff", "--json", "HEAD", "fused-exp"))
    changed = diff["metrics"]["metrics/eval.json"]
    assert changed["swd.swd_avg"]["diff"] != 0
    assert "loss_d" in diff["metrics"]["metrics/train.json"]
    assert diff["params"]["params.yaml"]["model.variant"]["new"] == "fused"
    metrics_diff = sh(project, "dvc", "metrics", "diff", "HEAD", "fused-exp")
    assert "swd.swd_avg" in metrics_diff and "metrics/eval.json" in metrics_diff


def test_sample_reads_an_experiment_from_the_cache_and_its_mlflow_run_draws_the_same(
        project, fused_exp, tmp_path):
    """Runs before the queued sweep, which empties the MLflow store."""
    from test_sample import pixels

    # The workspace holds fused-exp's outputs (exp run applies them): hide them, so that only
    # the DVC cache can give the experiment's generator, and see that nothing brings them back.
    status = sh(project, "git", "status", "--porcelain")
    (project / "models").rename(project / "models-hidden")
    try:
        out = sh(project, "catgan", "sample", "fused-exp", "-n", "3", "--nearest", "--out",
                 str(tmp_path / "exp"))
        assert not (project / "models").exists()
    finally:
        (project / "models-hidden").rename(project / "models")
    assert sh(project, "git", "status", "--porcelain") == status
    assert out.startswith("sampling DVC experiment fused-exp (") and ": fused," in out, out
    assert "(24 in DVC experiment fused-exp (" in out and "'s data/prepared/images.npy)" in out, out
    assert (tmp_path / "exp" / "nearest.png").is_file()
    sh(project, "catgan", "sample", "-n", "3", "--out", str(tmp_path / "ws"))
    # Not read through an MlflowClient here: it would keep this store open in the test process,
    # and the queued sweep's test, which replaces the store, would then read the old one.
    run_id = json.loads((project / "models" / "run.json").read_text())["mlflow_run_id"]
    out = sh(project, "catgan", "sample", run_id, "-n", "3", "--out", str(tmp_path / "run"))
    assert out.startswith(f"sampling MLflow run {run_id}: fused,"), out
    for name in (f"sample_{i:03d}.png" for i in range(3)):
        exp = pixels(tmp_path / "exp" / name)
        np.testing.assert_array_equal(exp, pixels(tmp_path / "run" / name))
        np.testing.assert_array_equal(exp, pixels(tmp_path / "ws" / name))
    proc = subprocess.run(["catgan", "sample", "no-such-exp"], cwd=project, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "'no-such-exp' is not a folder" in proc.stderr and "nor a DVC experiment" in proc.stderr


def revisions(html: str, plot: str) -> set[str]:
    """The revisions whose rows DVC embedded in the Vega spec of ``plot`` in its index.html."""
    spec = re.search(rf'<div id = "{plot}">\s*<script[^>]*>\s*var spec = (.*?);\s*vegaEmbed', html,
                     re.DOTALL)
    assert spec, f"no plot {plot!r} in the page"

    def rows(node) -> list[dict]:
        if isinstance(node, dict):
            return [node] * ("rev" in node) + [r for v in node.values() for r in rows(v)]
        return [r for v in node for r in rows(v)] if isinstance(node, list) else []

    return {row["rev"] for row in rows(json.loads(spec[1]))}


def test_plots_diff_between_experiments_holds_both_runs(project, fused_exp):
    out_dir = project / "dvc_plots"
    sh(project, "dvc", "plots", "diff", "HEAD", "fused-exp", "-o", str(out_dir))
    html = (out_dir / "index.html").read_text()
    for plot in ("losses", "scores", "generator_gradient_norm"):
        assert revisions(html, plot) == {"HEAD", "fused-exp"}, plot


@pytest.fixture(scope="module")
def swept(project: Path) -> str:
    """Both variants with train.seed=7 queued and run two at a time, into a store that does not
    exist yet (run after the tests that read fused-exp's MLflow run); the final queue status."""
    for leftover in project.glob("mlflow.db*"):
        leftover.unlink()
    sh(project, "dvc", "exp", "run", "--queue", "-S", "model.variant=baseline,fused",
       "-S", "train.seed=7")
    return run_queue(project, env())


def test_queued_sweep_runs_two_at_once_and_lands_both_runs_in_the_main_mlflow_store(project,
                                                                                 swept):
    """The store's first-time setup and then every write happen concurrently, from DVC's temp
    workspaces."""
    assert swept.count("Success") == 2, swept
    from mlflow.tracking import MlflowClient

    from catgan.training.loop import COLUMNS

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("catgan").experiment_id],
                              "tags.seed = '7'")
    assert sorted(r.data.tags["variant"] for r in runs) == ["baseline", "fused"]
    spans = []
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["dvc_exp_name"]
        assert "eval.swd.swd_avg" in run.data.metrics
        for col in COLUMNS:  # every value exactly once: nothing lost to a locked database
            assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/" + col)] \
                == [1], col
            steps = client.get_metric_history(run.info.run_id, "step/" + col)
            assert sorted(m.step for m in steps) == [1, 2], col
        logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
        assert {"index.html", "losses.png", "scores.png", "samples.mp4"} <= logged
        # From train's start to evaluate's end: training alone lasts about a second, shorter than
        # the gap between the two queue workers starting, so it cannot show them overlapping.
        evaluated = client.get_metric_history(run.info.run_id, "eval.swd.swd_avg")
        spans.append((run.info.start_time, max(m.timestamp for m in evaluated)))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two pipelines did not overlap, so nothing ran at once: {spans}"
    assert not list((project / ".dvc" / "tmp" / "exps").rglob("mlflow.db"))


def test_compare_from_dvc_and_from_mlflow_gives_the_same_metrics_of_the_same_runs(project,
                                                                                swept):
    """The queued sweep's two runs, read from DVC's metric files and from the
    MLflow store: the same keys, the same numbers, no settings among them."""
    from catgan.study.compare import from_dvc, from_mlflow
    from catgan.study.compare.runs import NOT_METRICS
    from catgan.study.compare.stats import summarize

    in_dvc = from_dvc.collect(project)
    in_mlflow = from_mlflow.collect(f"sqlite:///{project / 'mlflow.db'}", "catgan")
    swept = {(r.group, r.seed): r.metrics for r in in_dvc if r.seed == 7}
    assert sorted(swept) == [("baseline", 7), ("fused", 7)]
    assert {(r.group, r.seed): r.metrics for r in in_mlflow} == swept
    assert all("eval.swd.swd_avg" in m and "train.loss_d" in m and not NOT_METRICS & m.keys()
               for m in swept.values())
    assert [r.metric for r in summarize(in_dvc).rows] == [r.metric for r in summarize(in_mlflow).rows]


def test_demo_runs_both_variants_as_experiments_and_prints_the_comparison(project):
    tiny = {"data.synthetic_count": 24, "train.batch_size": 4, "train.steps_per_epoch": 2,
            "eval.num_samples": 16, "eval.kid_subset_size": 8}
    overrides = [arg for key, value in tiny.items() for arg in ("-S", f"{key}={value}")]
    before = sh(project, "git", "status", "--porcelain")
    out = sh(project, sys.executable, "-m", "catgan.demo", "--epochs", "1", *overrides)
    sections = {part.split(" ==", 1)[0]: part for part in out.split("\n== ")[1:]}

    table = sections["dvc exp show (selected columns)"]
    assert sorted(line.split()[0] for line in table.splitlines()[2:] if line.strip()) == [
        "demo-baseline", "demo-fused"], table
    assert "swd.swd_avg" in sections["dvc metrics diff demo-baseline demo-fused"]
    assert "fused - baseline" in sections["catgan compare (one seed each: no interval yet)"]
    lines = (line.partition(": ") for line in sections["reports"].splitlines())
    reports = {name: path for name, _, path in lines if name in ("baseline", "fused")}
    assert sorted(reports) == ["baseline", "fused"]
    assert all(Path(path).is_file() for path in reports.values()), reports
    assert sh(project, "git", "status", "--porcelain") == before  # temp experiments only


def stale_stages(project: Path) -> set[str]:
    status = json.loads(sh(project, "dvc", "status", "--json"))
    return {name.split(":")[-1] for name in status}


def test_editing_sampling_code_makes_evaluate_stale_and_the_report_code_does_not_touch_train(
        project):
    models, report = project / "catgan" / "model" / "nets.py", project / "catgan" / "report" / "runpage.py"
    saved = models.read_text(), report.read_text()
    try:
        models.write_text(saved[0].replace('"""G(z) with batch statistics, as in training; uses no '
                                           'RNG and changes no state."""', '"""G(z)."""'))
        assert models.read_text() != saved[0]
        assert {"train", "evaluate", "plot"} <= stale_stages(project)
        models.write_text(saved[0])
        report.write_text(saved[1] + "\nREPORT_EDITED = True\n")
        assert stale_stages(project) == {"plot"}
    finally:
        models.write_text(saved[0])
        report.write_text(saved[1])
    assert "up to date" in sh(project, "dvc", "status")


def test_stages_import_the_experiment_workspaces_own_catgan(project):
    """`python -m stages.x` puts the workspace first on sys.path: a queued or temp experiment runs
    its own copy of catgan/, not the one the editable install points at."""
    errors = project / "catgan" / "errors.py"
    saved = errors.read_text()
    try:
        errors.write_text(saved + "\nimport sys\nprint('catgan from', __file__, file=sys.stderr)\n")
        proc = subprocess.run(["dvc", "repro", "--force", "fetch"], cwd=project, env=env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"catgan from {errors}" in proc.stdout + proc.stderr
    finally:
        errors.write_text(saved)
        sh(project, "dvc", "repro", "fetch")
