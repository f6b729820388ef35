"""docs/epoch_grids.py: each run's grid corner lands in its row and epoch column; a missing run or
epoch is named in one line."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from catgan.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("epoch_grids", ROOT / "docs" / "epoch_grids.py")
epoch_grids = importlib.util.module_from_spec(spec)
spec.loader.exec_module(epoch_grids)


def study(tmp_path: Path) -> Path:
    """Two runs whose grid at epoch e is one flat colour: (run index, epoch, 0) x 40."""
    for i, name in enumerate(("study-a-seed0", "study-b-seed0")):
        grids = tmp_path / "runs" / name / "grids"
        grids.mkdir(parents=True)
        for epoch in (1, 2):
            Image.new("RGB", (530, 530), (i * 40, epoch * 40, 0)).save(grids / f"epoch_{epoch:03d}.png")
    return tmp_path


def test_each_cell_is_its_runs_grid_at_its_epoch(tmp_path):
    out = tmp_path / "sheet.png"
    epoch_grids.main([str(study(tmp_path / "s")), "--runs", "study-b-seed0", "study-a-seed0",
                      "--epochs", "2", "1", "--side", "2", "--out", str(out)])
    sheet = Image.open(out).convert("RGB")
    cell = 2 * epoch_grids.TILE + epoch_grids.GAP
    assert sheet.size == (epoch_grids.LABEL_W + 2 * cell, epoch_grids.HEAD_H + 2 * cell)
    for row, run in enumerate((1, 0)):
        for col, epoch in enumerate((2, 1)):
            x, y = epoch_grids.LABEL_W + col * cell + 10, epoch_grids.HEAD_H + row * cell + 10
            assert sheet.getpixel((x, y)) == (run * 40, epoch * 40, 0), (row, col)


def test_a_gpu_study_out_folder_adds_its_runs_still_training(tmp_path):
    out = tmp_path / "OUT"
    study(out / "study")  # two finished runs
    (out / "work").mkdir()  # b still trains: its grids so far are in work/
    (out / "study" / "runs" / "study-b-seed0").rename(out / "work" / "study-b-seed0")
    sheet_path = tmp_path / "sheet.png"
    epoch_grids.main([str(out), "--runs", "study-a-seed0", "study-b-seed0", "--epochs", "2",
                      "--side", "1", "--out", str(sheet_path)])
    sheet = Image.open(sheet_path).convert("RGB")
    cell = epoch_grids.TILE + epoch_grids.GAP
    for row, run in enumerate((0, 1)):
        assert sheet.getpixel((epoch_grids.LABEL_W + 10, epoch_grids.HEAD_H + row * cell + 10)) == (
            run * 40, 80, 0)


@pytest.mark.parametrize("runs, epochs, message", [
    (["study-c-seed0"], ["1"], "run 'study-c-seed0' is in none of the studies given; they hold: "
                               "study-a-seed0, study-b-seed0"),
    (["study-a-seed0"], ["7"], "no grid for epoch 7; the run kept epoch_001, epoch_002"),
])
def test_a_missing_run_or_epoch_is_named(tmp_path, runs, epochs, message):
    with pytest.raises(UserError, match=message):
        epoch_grids.compose({p.name: p for p in (study(tmp_path) / "runs").iterdir()}, runs,
                            [int(e) for e in epochs], 2)
