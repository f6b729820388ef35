"""Training curves as PNG figures and the per-epoch sample sheets as an mp4."""
from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, UnidentifiedImageError

from catgan.errors import UserError
from catgan.fileio import atomic_path

Rows = list[dict[str, float]]

D_COLOR, G_COLOR = "#1f77b4", "#d62728"
REAL_COLOR, FAKE_COLOR = "#2ca02c", "#9467bd"
STEP_ALPHA = 0.2


def read_rows(path: Path, columns: Iterable[str] = ()) -> Rows:
    """Rows of a numeric CSV with a header line; ``columns`` must all be present."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            raw = list(reader)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the train stage first (dvc repro train)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: cannot read it as CSV ({err}); re-run the train stage") from None
    if not header:
        raise UserError(f"{path}: empty file, expected a header line; re-run the train stage")
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (header has "
                        f"{', '.join(header)}); re-run the train stage")
    rows: Rows = []
    for line, row in enumerate(raw, start=2):
        if None in row or None in row.values():
            raise UserError(f"{path}: line {line} does not have the header's {len(header)} fields; "
                            "re-run the train stage")
        try:
            rows.append({key: float(value) for key, value in row.items()})
        except ValueError as err:
            raise UserError(f"{path}: line {line}: {err}; re-run the train stage") from None
    return rows


def steps_per_epoch(steps: Rows) -> float:
    """Optimizer steps in one epoch, from the step log: the first logged steps of two consecutive
    epochs are one epoch apart; with a single epoch the last logged step is the best bound."""
    firsts: dict[int, float] = {}
    for row in steps:
        firsts.setdefault(int(row["epoch"]), row["step"])
    epochs = sorted(firsts)
    for a, b in zip(epochs, epochs[1:]):
        if b == a + 1:
            return firsts[b] - firsts[a]
    return max(row["step"] for row in steps)


def plot_losses(history: Rows, steps: Rows, path: Path, *, title: str, dpi: int) -> None:
    """D and G loss: epoch means as marked lines over the faint per-step log."""
    series = [("loss_d", "D loss", D_COLOR), ("loss_g", "G loss", G_COLOR)]
    _plot_curves(history, steps, series, path, title=title, dpi=dpi, ylabel="loss", unit=False)


def plot_scores(history: Rows, steps: Rows, path: Path, *, title: str, dpi: int) -> None:
    """Mean sigmoid(D) on real and on fake images, same layout, y in [0, 1]."""
    series = [("real_score", "D(real)", REAL_COLOR), ("fake_score", "D(G(z))", FAKE_COLOR)]
    _plot_curves(history, steps, series, path, title=title, dpi=dpi,
                 ylabel="mean sigmoid(D)", unit=True)


def _plot_curves(history: Rows, steps: Rows, series: list[tuple[str, str, str]], path: Path, *,
                 title: str, dpi: int, ylabel: str, unit: bool) -> None:
    if not history:
        raise UserError(f"{path}: no epochs to plot; the train stage wrote an empty history")
    fig = Figure(figsize=(6.4, 4.4), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    # Step s ends at s / steps_per_epoch epochs, so an epoch's steps lead up to its mean's marker.
    per_epoch = steps_per_epoch(steps) if steps else 1.0
    step_x = [row["step"] / per_epoch for row in steps]
    for key, label, color in series:
        if steps:
            ax.plot(step_x, [row[key] for row in steps], color=color, alpha=STEP_ALPHA,
                    linewidth=1, label=f"{label}, per step")
        ax.plot(epochs, [row[key] for row in history], color=color, marker="o", markersize=4,
                linewidth=2, label=f"{label}, epoch mean")
    if unit:
        ax.axhline(0.5, color="0.5", linestyle=":", linewidth=1, label="0.5 (D undecided)")
        ax.set_ylim(0, 1)
    ax.set_xlim(0, max(epochs))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    # Below the axes: the faint per-step lines fill the plot, so no corner is free of data.
    fig.legend(loc="outside lower center", ncols=len(series) + unit, fontsize="small",
               frameon=False)
    with atomic_path(path, suffix=".png") as tmp:
        # No Software tag: the bytes depend only on the data, not on the matplotlib build.
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def write_video(frames: list[Path], path: Path, *, fps: int) -> None:
    """One H.264 (yuv420p) frame per PNG, pixel for pixel: every PNG must share one even size."""
    import imageio.v3 as iio

    if not frames:
        raise UserError(f"{path}: no sample sheets to make a video of; run the train stage first")
    pixels = [_frame(png) for png in frames]
    height, width = pixels[0].shape[:2]
    for png, frame in zip(frames, pixels):
        if frame.shape[:2] != (height, width):
            raise UserError(f"{png}: is {frame.shape[1]}x{frame.shape[0]} but {frames[0]} is "
                            f"{width}x{height}; every sample sheet must be the same size")
    if height % 2 or width % 2:
        raise UserError(f"{frames[0]}: is {width}x{height}; yuv420p video needs even sides")
    with atomic_path(path, suffix=".mp4") as tmp:
        # macro_block_size 2 keeps even frames unscaled; bitexact and no metadata keep the
        # bytes reproducible; faststart lets a browser play it from a data URI.
        iio.imwrite(tmp, np.stack(pixels), plugin="FFMPEG", extension=".mp4", fps=fps,
                    codec="libx264", pixelformat="yuv420p", quality=7, macro_block_size=2,
                    ffmpeg_log_level="error",
                    output_params=["-f", "mp4", "-movflags", "+faststart", "-fflags", "+bitexact",
                                   "-map_metadata", "-1"])


def _frame(png: Path) -> np.ndarray:
    try:
        with Image.open(png) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{png}: sample sheet not found; re-run the train stage") from None
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"{png}: not a readable image ({err}); re-run the train stage") from None
