"""catgan compare: statistics over seeds, DVC and MLflow run collection, and the CLI."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from catgan.cli import main
from catgan.errors import UserError
from catgan.study.compare.from_dvc import collect as collect_dvc
from catgan.study.compare.from_dvc import experiments, records
from catgan.study.compare.from_mlflow import collect as collect_mlflow
from catgan.study.compare.render import render_text, save
from catgan.study.compare.runs import Record
from catgan.study.compare.stats import direction, summarize
from catgan.training.outputs import EPOCH_KEY, STEP_KEY

SAMPLE = Path(__file__).parent / "data" / "dvc_exp_show.json"
SWD = "eval.swd.swd_avg"


def exp_records(data, where="dvc exp show"):
    """Finished runs in parsed ``dvc exp show --json`` output, as catgan compare reads them."""
    return records(experiments(data, where), where)


def runs(metric: str, **by_variant: list[float]) -> list[Record]:
    return [Record(f"{v}-{seed}", v, seed, {metric: x})
            for v, values in by_variant.items() for seed, x in enumerate(values)]


def row(summary, metric: str):
    return next(r for r in summary.rows if r.metric == metric)


# ------------------------------------------------------------------------------------- statistics

def test_means_std_and_intervals_match_scipy():
    base, fused = [41.0, 43.5, 40.2, 44.1], [30.1, 33.0, 31.4]
    r = row(summarize(runs(SWD, fused=fused, baseline=base)), SWD)
    for values, s in zip((base, fused), r.stats):  # baseline first though given second
        assert s.n == len(values) and s.seeds == tuple(range(len(values)))
        assert s.mean == pytest.approx(np.mean(values))
        assert s.std == pytest.approx(np.std(values, ddof=1))
        assert s.ci == pytest.approx(stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                                      scale=stats.sem(values)))
    welch = stats.ttest_ind(fused, base, equal_var=False)
    assert r.difference == pytest.approx(np.mean(fused) - np.mean(base))
    assert r.interval == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert r.df == pytest.approx(welch.df)


def test_tiny_case_by_hand():
    r = row(summarize(runs("loss_g", baseline=[1.0, 3.0], fused=[2.0, 4.0, 6.0]), confidence=0.9),
            "loss_g")
    a, b = r.stats
    # baseline: mean 2, std sqrt(2), sem 1, t(0.95; 1 df) = 6.313752
    assert (a.mean, a.std) == pytest.approx((2.0, math.sqrt(2)))
    assert a.ci == pytest.approx((2 - 6.313752, 2 + 6.313752), abs=1e-5)
    # fused: mean 4, std 2, sem 2/sqrt(3), t(0.95; 2 df) = 2.919986
    assert b.ci == pytest.approx((4 - 2.919986 * 2 / math.sqrt(3), 4 + 2.919986 * 2 / math.sqrt(3)),
                                 abs=1e-5)
    # Welch: se^2 = 2/2 + 4/3 = 7/3, df = (7/3)^2 / (1/1 + (4/3)^2/2) = 49/17,
    # t(0.95; 49/17) = 2.393044
    assert r.difference == 2.0 and r.df == pytest.approx(49 / 17)
    half = 2.393044 * math.sqrt(7 / 3)
    assert r.interval == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert r.verdict == "within the noise: no difference shown with 2 and 3 seeds"


@pytest.mark.parametrize("metric, base, fused, expected", [
    (SWD, [41.0, 43.5, 40.2], [30.1, 33.0, 31.4], "fused is better (lower)"),
    ("eval.inception.fid", [80.0, 82.0, 81.0], [90.0, 95.0, 93.0], "baseline is better (lower)"),
    (SWD, [41.0, 33.5, 40.2], [30.1, 43.0, 37.4],
     "within the noise: no difference shown with 3 seeds"),
    ("eval.diversity.diversity_ratio", [0.50, 0.55, 0.52], [0.90, 0.92, 0.88],
     "fused is better (higher, toward 1)"),
    ("eval.diversity.diversity_ratio", [1.20, 1.22, 1.21], [1.02, 1.01, 1.03],
     "baseline is higher, but both are at or above 1: no better side"),
    ("train.loss_d", [0.5, 0.6, 0.55], [1.3, 1.2, 1.25],
     "fused is higher (no better side for this metric)"),
])
def test_verdicts_know_each_metric_family(metric, base, fused, expected):
    assert row(summarize(runs(metric, baseline=base, fused=fused)), metric).verdict == expected


def test_direction_only_for_model_quality_metrics():
    assert direction("eval.swd.swd_64") == direction("eval.inception.kid_mean") == "lower"
    assert direction("eval.swd_real_floor.swd_avg") is None  # a reference, not the model
    assert direction("eval.inception.kid_std") is None
    assert direction("eval.scores.fake") is None and direction("loss_g") is None
    # MLflow's keys of the per-epoch curves (catgan.training.outputs.EPOCH_KEY)
    assert direction("epoch/swd_avg") == "lower" and direction("epoch/loss_d") is None
    assert direction("epoch/diversity_ratio") == "higher up to 1"


def test_a_single_seed_gives_no_interval_and_says_so():
    summary = summarize(runs(SWD, baseline=[41.0, 43.5, 40.2], fused=[30.0]))
    r = row(summary, SWD)
    assert r.stats[1].ci is None and r.stats[1].std is None and r.interval is None
    assert r.verdict == "no interval: fused has 1 seed; run at least 2 seeds each"
    text = render_text(summary)
    assert "30 (1)" in text and "-11.57 [no interval]" in text
    assert text.count("±") == 3  # the two header cells and the baseline's interval only


@pytest.mark.parametrize("records, kwargs, message", [
    ([], {}, "no finished runs"),
    (runs(SWD, fused=[1.0, 2.0]), {}, "exactly two variants.*found 1 \\(fused\\)"),
    (runs(SWD, baseline=[1.0], fused=[2.0], wide=[3.0]), {}, "found 3 .*--variants"),
    (runs(SWD, baseline=[1.0], fused=[2.0]), {"metrics": ["eval.fid*"]},
     "no metric matches eval.fid\\*; available: eval.swd.swd_avg"),
    (runs(SWD, baseline=[1.0, 2.0], fused=[2.0]) + [Record("again", "baseline", 0, {SWD: 5.0})], {},
     "runs baseline-0 and again are both baseline seed 0"),
])
def test_unusable_runs_raise_a_clear_error(records, kwargs, message):
    with pytest.raises(UserError, match=message):
        summarize(records, **kwargs)


def test_variants_pick_two_of_three_and_patterns_filter_metrics():
    records = [Record(f"{v}{s}", v, s, {SWD: x + s, "loss_d": 1.0})
               for v, x in (("baseline", 40.0), ("fused", 30.0), ("wide", 20.0)) for s in range(2)]
    summary = summarize(records, groups=["wide", "fused"], metrics=["eval.*"])
    assert summary.groups == ("wide", "fused") and [r.metric for r in summary.rows] == [SWD]
    assert row(summary, SWD).difference == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------- DVC

def test_exp_show_sample_gives_only_finished_experiments(caplog):
    caplog.set_level("INFO")
    records = exp_records(json.loads(SAMPLE.read_text()))
    assert sorted((r.name, r.group, r.seed) for r in records) == [
        ("base-s0", "baseline", 0), ("fused-s0", "fused", 0), ("fused-s1", "fused", 1),
        ("pending", "baseline", 1)]
    fused1 = next(r for r in records if r.name == "fused-s1")
    assert fused1.metrics[SWD] == 31.0 and fused1.metrics["eval.swd.swd_64"] == 32.0
    assert fused1.metrics["train.loss_d"] == 1.375
    # The epochs trained, the evaluated set's size, whether FID ran: settings, not metrics
    assert not {"train.epoch", "eval.num_samples", "eval.inception.computed"} & fused1.metrics.keys()
    assert "waiting (queued)" in caplog.text and "broken (failed)" in caplog.text


def test_exp_show_rerun_of_a_seed_keeps_the_newest():
    data = json.loads(SAMPLE.read_text())
    exps = data[1]["experiments"]
    stamp = lambda e: e["revs"][0]["data"]["timestamp"]  # noqa: E731
    newest, older = (next(e for e in exps if e["name"] == n) for n in ("pending", "base-s0"))
    assert stamp(newest) > stamp(older)
    newest["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["seed"] = 0
    exps.remove(newest)
    exps.append(newest)  # the order dvc lists them in does not matter
    records = exp_records(data)
    assert [r.name for r in records if r.group == "baseline"] == ["pending"]


def test_exp_show_runs_of_a_study_arm_are_grouped_by_their_arm():
    data = json.loads(SAMPLE.read_text())
    for exp in data[1]["experiments"]:
        if exp["name"].startswith("fused"):
            exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["tracking"] = {"arm": "modern"}
    groups = {r.name: r.group for r in exp_records(data)}
    assert groups == {"base-s0": "baseline", "pending": "baseline", "fused-s0": "modern",
                      "fused-s1": "modern"}


def test_exp_show_running_experiment_is_left_out_even_with_metrics(caplog):
    caplog.set_level("INFO")
    data = json.loads(SAMPLE.read_text())
    fused1 = next(e for e in data[1]["experiments"] if e["name"] == "fused-s1")
    assert fused1["revs"][0]["data"]["metrics"]["metrics/eval.json"]["data"]
    fused1["executor"]["state"] = "running"
    assert "fused-s1" not in [r.name for r in exp_records(data)]
    assert "fused-s1 (running)" in caplog.text


def test_exp_show_output_of_another_shape_is_a_user_error():
    with pytest.raises(UserError, match="expected a JSON list"):
        exp_records({"workspace": {}})


def _env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com"}


@pytest.mark.slow
def test_collect_dvc_finds_experiments_of_a_real_repo(tmp_path, monkeypatch, capsys):
    dvc = str(Path(sys.executable).with_name("dvc"))
    sh = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=_env(), check=True,  # noqa: E731
                                     capture_output=True, timeout=60)
    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"model": {"variant": "baseline"}, "train": {"seed": 0}}))
    code = ("import json, os, yaml; p = yaml.safe_load(open('params.yaml')); "
            "os.makedirs('metrics', exist_ok=True); "
            "v = {'baseline': 40.0, 'fused': 30.0}[p['model']['variant']] + p['train']['seed']; "
            "json.dump({'swd': {'swd_avg': v}}, open('metrics/eval.json', 'w'))")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}",
        "params": ["model", "train"], "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")
    sh(dvc, "exp", "run", "-q", "-S", "model.variant=baseline", "-S", "train.seed=0")
    sh(dvc, "exp", "run", "-q", "-S", "model.variant=fused", "-S", "train.seed=1")
    monkeypatch.setenv("PATH", _env()["PATH"])

    records = collect_dvc(tmp_path)
    assert sorted((r.group, r.seed, r.metrics) for r in records) == [
        ("baseline", 0, {SWD: 40.0}), ("fused", 1, {SWD: 31.0})]

    main(["compare", "--repo", str(tmp_path), "--out", str(tmp_path / "cmp")])  # the default source
    out = capsys.readouterr().out
    assert "-9 [no interval]" in out and "fused has 1 seed" in out
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert [(r["variant"], r["seed"]) for r in written] == [("baseline", 0), ("fused", 1)]


@pytest.mark.slow
def test_collect_dvc_outside_a_dvc_project_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path}: dvc exp show failed")):
        collect_dvc(tmp_path)


# ---------------------------------------------------------------------------------------- MLflow

BASE_SWD, FUSED_SWD = [41.0, 43.5, 40.2], [30.1, 33.0, 31.4]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """Three finished seeds per variant, an older re-run, a failed and a running run."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("catgan")

    def run(variant, seed, swd, start, status="FINISHED", experiment=exp):
        r = client.create_run(experiment, start_time=start,
                              run_name=f"{variant}-seed{seed}-{start}")
        # The keys the train stage logs: per epoch, with the quality check, and per step
        # (catgan.training.outputs); and evaluate's settings beside its metrics
        metrics = [Metric(EPOCH_KEY + "loss_d", 9.0, start, 1),
                   Metric(EPOCH_KEY + "loss_d", 1.0 + seed, start, 2),
                   Metric(EPOCH_KEY + "swd_avg", 60.0 + seed, start, 2),
                   Metric(STEP_KEY + "loss_d", 5.0, start, 4)]
        if swd is not None:
            metrics += [Metric(SWD, swd, start, 2), Metric("eval.num_samples", 16, start, 2),
                        Metric("eval.inception.computed", 0, start, 2)]
        client.log_batch(r.info.run_id, metrics=metrics, params=[
            Param("model.variant", variant), Param("train.seed", str(seed))])
        if status != "RUNNING":
            client.set_terminated(r.info.run_id, status=status)

    run("fused", 0, 99.0, start=1000)  # re-run below: the newer one counts
    for seed, (b, f) in enumerate(zip(BASE_SWD, FUSED_SWD)):
        run("baseline", seed, b, start=2000 + seed)
        run("fused", seed, f, start=3000 + seed)
    run("fused", 3, 1.0, start=4000, status="FAILED")
    run("baseline", 3, 1.0, start=4001, status="RUNNING")
    run("fused", 0, None, start=5000, status="RUNNING", experiment=client.create_experiment("idle"))
    return uri


def test_collect_mlflow_takes_finished_runs_and_latest_metrics(mlflow_store):
    records = collect_mlflow(mlflow_store, "catgan")
    assert sorted((r.group, r.seed) for r in records) == [
        (v, s) for v in ("baseline", "fused") for s in range(3)]
    by_key = {(r.group, r.seed): r for r in records}
    assert [by_key["fused", s].metrics[SWD] for s in range(3)] == FUSED_SWD
    assert by_key["fused", 0].name == "fused-seed0-3000"
    # Named as dvc exp show names them; curves and settings are no final metric
    assert [by_key["baseline", s].metrics["train.loss_d"] for s in range(3)] == [1.0, 2.0, 3.0]
    assert all(sorted(r.metrics) == [SWD, "train.loss_d"] for r in records)


def test_collect_mlflow_missing_store_or_experiment(mlflow_store, tmp_path):
    with pytest.raises(UserError, match="has no experiment 'nope'.*--experiment"):
        collect_mlflow(mlflow_store, "nope")
    with pytest.raises(UserError, match="does not exist"):
        collect_mlflow(f"sqlite:///{tmp_path / 'absent.db'}", "catgan")
    assert not (tmp_path / "absent.db").exists()


# ------------------------------------------------------------------------------------------- CLI

def test_cli_prints_the_table_and_writes_three_files(mlflow_store, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    assert main(["compare", "--from", "mlflow", "--tracking-uri", mlflow_store,
                 "--experiment", "catgan", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    table = out.splitlines()
    assert table[0].split() == ["metric", "baseline", "mean", "±", "95%", "(n)", "fused", "mean",
                                "±", "95%", "(n)", "fused", "-", "baseline", "[95%]", "verdict"]
    swd_line = next(line for line in table if line.startswith(SWD))
    assert "fused is better (lower)" in swd_line and swd_line.endswith("(lower)")
    assert f"wrote {out_dir / 'compare.json'}" in out
    result = json.loads((out_dir / "compare.json").read_text())
    swd = result["metrics"][SWD]
    assert swd["verdict"] == "fused is better (lower)" and swd["fused"]["n"] == 3
    assert swd["fused"]["values"] == {"0": 30.1, "1": 33.0, "2": 31.4}
    assert swd["difference"]["interval"][1] < 0
    assert result["metrics"]["train.loss_d"]["verdict"].startswith("within the noise")
    assert render_text(summarize(collect_mlflow(mlflow_store, "catgan"))) in \
        (out_dir / "compare.md").read_text()
    assert (out_dir / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".")]


def test_cli_without_finished_runs_exits_2_with_one_line(mlflow_store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--from", "mlflow", "--tracking-uri", mlflow_store, "--experiment", "idle",
              "--out", str(tmp_path / "cmp")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: no finished runs") and captured.err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()


def test_save_writes_into_a_new_folder(tmp_path):
    summary = summarize(runs(SWD, baseline=[41.0, 43.5], fused=[30.1, 33.0]))
    paths = save(summary, tmp_path / "a" / "b")
    assert [p.name for p in paths] == ["compare.json", "compare.md", "compare.png"]
    assert all(p.stat().st_size > 0 for p in paths)
