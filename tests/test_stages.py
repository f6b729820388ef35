"""The real stage scripts, run as DVC would run them, in a temporary project folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY, merge, write_params


def run_stage(project: Path, name: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=project,
                          capture_output=True, text=True, timeout=timeout, env=stage_env(project))
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    return proc


def stage_env(project: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return {**env, "DVC_ROOT": str(project), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A project folder holding tiny preprocessed synthetic data."""
    from conftest import TINY

    project = tmp_path_factory.mktemp("project")
    write_params(project, TINY)
    run_stage(project, "fetch")
    run_stage(project, "preprocess")
    return project


def clone(prepared: Path, dest: Path, overrides: dict) -> Path:
    from conftest import TINY

    shutil.copytree(prepared / "data", dest / "data")
    write_params(dest, merge(TINY, overrides))
    return dest


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def same(a: Path, b: Path) -> bool:
    sa, sb = state(a), state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_train_evaluate_plot_write_every_declared_output(prepared, tmp_path):
    project = clone(prepared, tmp_path, {})
    run_stage(project, "train")
    for path in ("models/generator.pt", "models/discriminator.pt", "models/run.json",
                 "metrics/train.json", "metrics/history.csv", "metrics/steps.csv",
                 "samples/epoch_000.png", "samples/epoch_002.png"):
        assert (project / path).is_file(), path
    assert len(list((project / "samples").iterdir())) == 3
    assert json.loads((project / "metrics/train.json").read_text())["epoch"] == 2
    out = run_stage(project, "evaluate").stdout
    assert "SWD" in out
    metrics = json.loads((project / "metrics/eval.json").read_text())

    def numbers_only(node):
        return all(numbers_only(v) if isinstance(v, dict) else isinstance(v, (int, float))
                   for v in node.values())

    assert numbers_only(metrics)
    assert metrics["swd"]["swd_avg"] > metrics["swd_real_floor"]["swd_avg"] > 0  # 4 steps: far off
    assert 0 < metrics["scores"]["fake"] < 1 and 0 < metrics["scores"]["real"] < 1
    # No Inception weights in the test params: FID and KID are skipped, and eval.json says so.
    assert metrics["inception"] == {"computed": 0}
    images = len(np.load(project / "data/prepared/images.npy", mmap_mode="r"))
    assert metrics["num_samples"] == min(TINY["eval"]["num_samples"], images // 2)

    run_stage(project, "plot")
    report = project / "report"
    for name in ("losses.png", "scores.png", "dataset.png", "epoch0.png", "final.png",
                 "samples.mp4", "index.html"):
        assert (report / name).stat().st_size > 0, name
    grid = Image.open(project / "samples/epoch_000.png").size
    frames = list(imageio.v3.imiter(report / "samples.mp4", plugin="FFMPEG"))
    assert len(frames) == 3 and frames[0].shape[:2] == (grid[1], grid[0])  # epochs + 1
    assert "data:video/mp4;base64," in (report / "index.html").read_text()


@pytest.mark.slow  # three stage processes: out of the quick loop
def test_the_stages_carry_the_recipe_the_average_out_and_the_normalised_d_in(prepared, tmp_path):
    """With train.ema the saved generator is the average (the checkpoint keeps the raw G); with
    model.d_norm evaluate and plot rebuild the D that training saved."""
    project = clone(prepared, tmp_path, {"model": {"d_norm": "spectral"},
                                         "train": {"ema": 0.9, "augment": "color,translation,cutout",
                                                   "loss": "ralsgan"}})
    run_stage(project, "train")
    (folder,) = (project / "checkpoints").iterdir()
    ckpt = state(folder / "last.pt")
    saved = state(project / "models/generator.pt")
    assert all(torch.equal(saved[k], ckpt["G_ema"]["module." + k]) for k in saved)
    assert not all(torch.equal(saved[k], ckpt["G"][k]) for k in saved)
    d_keys = state(project / "models/discriminator.pt").keys()
    assert any(k.endswith("parametrizations.weight.original") for k in d_keys)
    assert "SWD" in run_stage(project, "evaluate").stdout
    run_stage(project, "plot")
    assert "SpectralNorm(weight)" in (project / "report/index.html").read_text()
