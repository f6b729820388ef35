"""Runs side by side, epoch by epoch: the top-left corner of each run's fixed-latent grid (the same
latents in every run of a seed), one row per run, one column per epoch.

    python docs/epoch_grids.py STUDY [STUDY ...] --runs RUN [RUN ...] --epochs 1 2 3 4 --out F.jpg

STUDY: study folders or .tar.gz archives (catgan/study/folder.py), or the --out folder of
benchmarks/gpu_study.py, whose work/ adds the runs still training with the grids they have so far;
RUN: a run folder's name in one of them, e.g. study-modern-seed0. docs/recipes.md's figures are
made this way.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from catgan.errors import UserError, cli_entry
from catgan.fileio import atomic_path
from catgan.study import folder as studydir

TILE, GAP, LABEL_W, HEAD_H = 66, 2, 150, 18  # a grid image is 64 px with a 2 px gap


def grid_of(runs: dict[str, Path], name: str, epoch: int) -> Path:
    if name not in runs:
        raise UserError(f"run {name!r} is in none of the studies given; they hold: {', '.join(sorted(runs))}")
    path = runs[name] / "grids" / f"epoch_{epoch:03d}.png"
    if not path.is_file():
        raise UserError(f"{path}: no grid for epoch {epoch}; the run kept "
                        f"{', '.join(p.stem for p in sorted(path.parent.glob('*.png')))}")
    return path


def compose(runs: dict[str, Path], names: list[str], epochs: list[int], side: int) -> Image.Image:
    """Rows ``names``, columns ``epochs``; each cell the first ``side`` x ``side`` images."""
    cell = side * TILE + GAP
    sheet = Image.new("RGB", (LABEL_W + cell * len(epochs), HEAD_H + cell * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, epoch in enumerate(epochs):
        draw.text((LABEL_W + col * cell + 4, 2), f"epoch {epoch}", fill="black")
    for row, name in enumerate(names):
        top = HEAD_H + row * cell
        draw.text((4, top + cell // 2 - 6), name.removeprefix("study-"), fill="black")
        for col, epoch in enumerate(epochs):
            with Image.open(grid_of(runs, name, epoch)) as grid:
                sheet.paste(grid.convert("RGB").crop((0, 0, side * TILE, side * TILE)),
                            (LABEL_W + col * cell, top))
    return sheet


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/epoch_grids.py", description=__doc__.split("\n\n")[0])
    p.add_argument("studies", type=Path, nargs="+", help="study folders or .tar.gz archives")
    p.add_argument("--runs", nargs="+", required=True, help="run folder names, one row each")
    p.add_argument("--epochs", type=int, nargs="+", required=True)
    p.add_argument("--side", type=int, default=4, help="images per side of each cell (default 4)")
    p.add_argument("--out", type=Path, required=True, help="a .jpg or .png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for i, source in enumerate(args.studies):
            folder = studydir.unpack(source, Path(tmp) / str(i)) if source.is_file() else source
            for parent in (folder / "runs", folder / "work", folder / "study" / "runs"):
                if parent.is_dir():
                    runs.update({run.name: run for run in sorted(parent.iterdir())})
        sheet = compose(runs, args.runs, args.epochs, args.side)
    with atomic_path(args.out, suffix=args.out.suffix) as part:
        sheet.save(part, format="JPEG" if args.out.suffix == ".jpg" else "PNG", quality=85)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
