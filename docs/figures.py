"""The study figures of README.md and docs/study.md, made from a study folder or archive by
the study page's own code.

    python docs/figures.py ../shared/studies/h200-60epochs.tar.gz --prefix h200

writes docs/<prefix>-swd-epochs.png, docs/<prefix>-curves.png and docs/<prefix>-grids.jpg: the
page's figures as they are, except the grids composite, which is scaled down and stored as JPEG
so that docs/ stays small (the page's lossless composite of 6 runs is about 2.7 MB).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from catgan.errors import cli_entry
from catgan.fileio import atomic_path
from catgan.study import folder as studydir
from catgan.study import page as studypage

DOCS = Path(__file__).resolve().parent
GRID_WIDTH, JPEG_QUALITY = 960, 85


def make(source: Path, prefix: str, out: Path = DOCS) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = studydir.unpack(source, tmp) if source.is_file() else source
        figs = tmp / "figures"
        studypage.build_page(folder, tmp / "study.html", figures_dir=figs)
        written = []
        for name in ("swd_epochs", "curves"):
            target = out / f"{prefix}-{name.replace('_', '-')}.png"
            with atomic_path(target, suffix=".png") as part:
                shutil.copyfile(figs / f"{name}.png", part)
            written.append(target)
        with Image.open(figs / "grids.png") as grids:
            scale = min(1.0, GRID_WIDTH / grids.width)
            small = grids.convert("RGB").resize(
                (round(grids.width * scale), round(grids.height * scale)), Image.LANCZOS)
        target = out / f"{prefix}-grids.jpg"
        with atomic_path(target, suffix=".jpg") as part:
            small.save(part, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return [*written, target]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/figures.py", description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a study folder (holding study.json) or a .tar.gz")
    p.add_argument("--prefix", required=True, help="file name prefix, e.g. h200")
    p.add_argument("--out", type=Path, default=DOCS, help="where the figures go (default: docs/)")
    args = p.parse_args(argv)
    for path in make(args.source, args.prefix, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
