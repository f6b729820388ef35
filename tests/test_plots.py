"""Curve figures, CSV reading and the sample-sheet video in catgan.report.plots."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from catgan.errors import UserError
from catgan.report.plots import plot_losses, plot_scores, read_rows, steps_per_epoch, write_video
from catgan.training.loop import COLUMNS
from catgan.training.outputs import write_csv

DPI = 50


def fake_log(epochs: int, per_epoch: int, log_every: int, seed: int = 0):
    """History and step rows laid out as the train loop writes them."""
    rng = np.random.default_rng(seed)
    history, steps = [], []
    for epoch in range(1, epochs + 1):
        values = rng.uniform(0.05, 0.95, size=(per_epoch, len(COLUMNS)))
        for j in range(per_epoch):
            if (j + 1) % log_every == 0:
                steps.append({"step": (epoch - 1) * per_epoch + j + 1, "epoch": epoch,
                              **dict(zip(COLUMNS, values[j].tolist()))})
        history.append({"epoch": epoch, **dict(zip(COLUMNS, values.mean(axis=0).tolist()))})
    return history, steps


def test_read_rows_round_trips_the_train_stage_csv(tmp_path):
    history, _ = fake_log(3, 4, 1)
    write_csv(history, tmp_path / "history.csv", ("epoch", *COLUMNS))
    rows = read_rows(tmp_path / "history.csv", ("epoch", "loss_d"))
    assert len(rows) == 3
    for got, want in zip(rows, history):
        assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("text, complaint", [
    ("", "empty file"),
    ("epoch,loss_d\n1,0.5\n2,abc\n", "line 3"),
    ("epoch,loss_d\n1,0.5,7\n", "line 2"),
    ("epoch,loss_d\n1\n", "line 2"),
    ("epoch,loss_g\n1,0.5\n", "missing column(s) loss_d"),
])
def test_read_rows_rejects_malformed_csv_naming_the_file(tmp_path, text, complaint):
    path = tmp_path / "history.csv"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_rows(path, ("epoch", "loss_d"))
    assert str(path) in str(err.value)
    assert complaint in str(err.value)


def test_read_rows_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="steps.csv: not found"):
        read_rows(tmp_path / "steps.csv")


@pytest.mark.parametrize("per_epoch, log_every, epochs",
                         [(7, 3, 3), (8, 4, 2), (5, 1, 4), (6, 6, 2)])
def test_steps_per_epoch_is_recovered_from_the_step_log(per_epoch, log_every, epochs):
    _, steps = fake_log(epochs, per_epoch, log_every)
    assert steps_per_epoch(steps) == per_epoch


@pytest.mark.parametrize("plot", [plot_losses, plot_scores])
def test_plots_are_real_deterministic_pngs(tmp_path, plot):
    history, steps = fake_log(4, 6, 2)
    plot(history, steps, tmp_path / "a.png", title="baseline, seed 0, 4 epochs", dpi=DPI)
    plot(history, steps, tmp_path / "b.png", title="baseline, seed 0, 4 epochs", dpi=DPI)
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG"
        assert 250 <= image.width <= 400 and 150 <= image.height <= 300
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "figure is nearly blank"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"], "temp file left behind"


def test_plots_change_with_the_data(tmp_path):
    history, steps = fake_log(3, 4, 1, seed=0)
    other, other_steps = fake_log(3, 4, 1, seed=1)
    plot_losses(history, steps, tmp_path / "a.png", title="t", dpi=DPI)
    plot_losses(other, other_steps, tmp_path / "b.png", title="t", dpi=DPI)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()


def test_plots_work_without_a_step_log(tmp_path):
    history, _ = fake_log(2, 4, 1)
    plot_scores(history, [], tmp_path / "scores.png", title="t", dpi=DPI)
    with Image.open(tmp_path / "scores.png") as image:
        assert image.format == "PNG"


def test_empty_history_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no epochs"):
        plot_losses([], [], tmp_path / "losses.png", title="t", dpi=DPI)
    assert not (tmp_path / "losses.png").exists()


def smooth_sheets(folder, count: int, size: int = 530):
    """Sample-sheet-like PNGs: smooth colour fields that H.264 keeps close to exact."""
    rng = np.random.default_rng(0)
    paths, pixels = [], []
    for epoch in range(count):
        low = rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        path = folder / f"epoch_{epoch:03d}.png"
        image.save(path)
        paths.append(path)
        pixels.append(np.asarray(image))
    return paths, pixels


def test_write_video_keeps_every_frame_at_sheet_size(tmp_path):
    frames, pixels = smooth_sheets(tmp_path, 4)
    video = tmp_path / "progress.mp4"
    write_video(frames, video, fps=2)
    meta = iio.immeta(video, plugin="FFMPEG")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    decoded = list(iio.imiter(video, plugin="FFMPEG"))
    assert len(decoded) == 4
    for got, want in zip(decoded, pixels):
        assert got.shape == (530, 530, 3)
        # Unscaled and in order: each frame matches its own source sheet.
        error = np.abs(got.astype(int) - want.astype(int)).mean()
        assert error < 4
    assert not list(tmp_path.glob(".*")), "temp file left behind"


def test_write_video_is_reproducible(tmp_path):
    frames, _ = smooth_sheets(tmp_path, 2, size=64)
    write_video(frames, tmp_path / "a.mp4", fps=2)
    write_video(frames, tmp_path / "b.mp4", fps=2)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_write_video_rejects_mismatched_or_odd_frames(tmp_path):
    frames, _ = smooth_sheets(tmp_path, 2, size=64)
    Image.new("RGB", (66, 64)).save(frames[1])
    with pytest.raises(UserError, match="epoch_001.png: is 66x64"):
        write_video(frames, tmp_path / "v.mp4", fps=2)
    Image.new("RGB", (65, 65)).save(frames[0])
    with pytest.raises(UserError, match="epoch_000.png: is 65x65"):
        write_video(frames[:1], tmp_path / "v.mp4", fps=2)
    with pytest.raises(UserError, match="epoch_009.png: sample sheet not found"):
        write_video([tmp_path / "epoch_009.png"], tmp_path / "v.mp4", fps=2)
    assert not (tmp_path / "v.mp4").exists()
