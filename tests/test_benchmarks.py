"""benchmarks/train_throughput.py and gpu_check on the CPU with tiny sizes: the dry run prints img/s
and TFLOP/s per loop, writes the JSON gpu_check's summary reads, and the shell script keeps to its
time budget. No timings are asserted: only that they come out, and how the FLOP counts compare."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catgan.data.synthetic import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed: plain `pytest` would not find it
from benchmarks import gpu_check, train_throughput  # noqa: E402

# Enough images for (1 warm-up + 2 timed steps) x batch 4; one thread, as on 2 busy cores.
TINY = ["--warmup", "1", "--steps", "2", "--repeats", "2", "--batch-size", "4", "--threads", "1",
        "--variants", "fused"]


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the one markdown table in ``text``, keyed by its header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(split[0], row, strict=True)) for row in split[2:]]


@pytest.fixture
def quiet():
    """train_throughput.main quietens the training loop's log; the other tests get it back."""
    logger = logging.getLogger("catgan.training.loop")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def cats(tmp_path) -> Path:
    folder = tmp_path / "cats" / "faces"
    folder.mkdir(parents=True)
    write_synthetic(folder, 12, seed=0)
    return folder.parent


@pytest.mark.slow
def test_the_cpu_dry_run_prints_img_s_and_tflops_for_every_loop(cats, tmp_path, capsys, quiet):
    results = tmp_path / "results"
    train_throughput.main([*TINY, "--configs", "fp32,bf16+cl", "--data", str(cats),
                           "--json", str(results / "throughput.json")])
    rows = {row["Loop"]: row for row in markdown_rows(capsys.readouterr().out)}
    assert list(rows) == ["reference (course)", "catgan fp32", "catgan bf16+cl"]
    for row in rows.values():
        assert float(row["img/s (median of 2)"].replace(",", "")) > 0
        assert float(row["TFLOP/s"]) > 0
    gflop = {name: float(row["GFLOP/step"]) for name, row in rows.items()}
    # The course's D step back-propagates through G and its G step computes D's weight gradients;
    # precision and layout change the kernels, not the count.
    assert gflop["reference (course)"] > gflop["catgan fp32"] == gflop["catgan bf16+cl"] > 0

    summary = markdown_rows(gpu_check.summary(results))
    assert [(row["Part"], row["Config"]) for row in summary] == [
        ("b: throughput", name) for name in rows]
    assert all("img/s" in row["Measured"] and "TFLOP/s" in row["Measured"] for row in summary)


def test_without_the_reference_the_ratios_are_against_the_first_config(cats, capsys, quiet):
    train_throughput.main([*TINY, "--repeats", "1", "--configs", "fp32,fp32+cl", "--no-reference",
                           "--data", str(cats)])
    rows = markdown_rows(capsys.readouterr().out)
    assert [row["Loop"] for row in rows] == ["catgan fp32", "catgan fp32+cl"]
    assert rows[0]["vs fp32"] == "1.00x" and float(rows[1]["TFLOP/s"]) > 0


def test_the_gpu_check_header_records_this_projects_commit(tmp_path, capsys):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
    gpu_check.main(["header", "--out", str(tmp_path), "--device", "cpu", "--command",
                    "benchmarks/gpu_check.sh --cpu"])
    out = capsys.readouterr().out
    assert f"commit {head}" in out  # the short hash, or the start of a longer one
    assert f"torch {torch.__version__}" in out
    record = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    assert record["code"]["commit"].startswith(head)
    assert record["command"] == "benchmarks/gpu_check.sh --cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_gpu_check_header_stops_with_2_without_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["header", "--out", str(tmp_path), "--device", "cuda"])
    assert stopped.value.code == 2
    assert capsys.readouterr().out == "no CUDA device\n"


@pytest.mark.slow
def test_gpu_check_starts_no_part_once_its_budget_is_spent(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path),
           "GPU_CHECK_BUDGET_S": "0"}
    # Its own session, so that a part started by mistake is stopped with the script, children too.
    proc = subprocess.Popen([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, out
    lines = out.splitlines()
    for part in ("a", "b", "c"):
        assert any(line.startswith(f"!! {part}:") and "not started" in line for line in lines)
        assert not any(line.startswith(f"== {part}:") for line in lines)
    assert any(line.startswith("== d:") and "skipped" in line for line in lines)
    assert lines[-1].startswith("no results")
