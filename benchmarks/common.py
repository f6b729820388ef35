"""Shared by the benchmarks: the machine they ran on, their input images, tables and medians."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from catgan.errors import UserError
from catgan.study import provenance

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ZIP = REPO.parent / "shared" / "data" / "cats-sample.zip"
# What both ImageFolder and catgan's preprocess read, so the two loops see the same files.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
SYNTHETIC_COUNT = 2000  # as many as the real sample holds


def default_data() -> Path | None:
    return SAMPLE_ZIP if SAMPLE_ZIP.is_file() else None


def image_files(root: Path) -> list[Path]:
    """Image files under ``root``, skipping hidden ones and macOS ``__MACOSX`` twins, as preprocess does."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") or part == "__MACOSX"
                               for part in p.relative_to(root).parts))
    if not files:
        raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found; "
                        "point --data at a folder or zip of images")
    return files


def prepare_images(data: Path | None, tmp: Path) -> tuple[Path, str]:
    """A folder of image files under ``tmp`` (or ``data`` itself) and a description of it.

    A zip is extracted with catgan's guarded extractor; without ``data`` the synthetic cats are
    drawn and re-encoded as JPEG (quality 95), since the real set and the course read JPEGs.
    """
    from catgan.data.archive import safe_extract_zip
    from catgan.data.synthetic import write_synthetic

    if data is None:
        folder = tmp / "synthetic" / "cats"
        folder.mkdir(parents=True)
        for png in write_synthetic(folder, SYNTHETIC_COUNT, seed=0):
            with Image.open(png) as img:
                img.convert("RGB").save(png.with_suffix(".jpg"), quality=95)
            png.unlink()
        return folder.parent, f"{SYNTHETIC_COUNT} synthetic 64x64 JPEGs (catgan.data.synthetic, seed 0)"
    data = Path(data)
    if data.suffix.lower() == ".zip":
        root = tmp / "extracted"
        count = safe_extract_zip(data, root)
        return root, f"{data.name} ({count} files)"
    if not data.is_dir():
        raise UserError(f"--data {data}: not a folder or a .zip of images; pass one, or leave --data "
                        "out for the shared cat sample (or synthetic cats without it)")
    return data, f"{data} ({len(image_files(data))} images)"


def synthetic_array(count: int) -> np.ndarray:
    """The first ``count`` synthetic cats of data.seed 0 as preprocess stores them: uint8 N x 3 x H x W."""
    from catgan.data.synthetic import draw_cat

    return np.stack([np.asarray(draw_cat(np.random.default_rng([0, i]))).transpose(2, 0, 1)
                     for i in range(count)])


def link_images(files: list[Path], dest: Path, count: int) -> Path:
    """``dest/images/`` holding at least ``count`` links cycling over ``files``, for ImageFolder."""
    folder = dest / "images"
    folder.mkdir(parents=True)
    for i in range(max(count, len(files))):
        src = files[i % len(files)]
        (folder / f"{i:06d}{src.suffix.lower()}").symlink_to(src.resolve())
    return dest


def warm_page_cache(files: list[Path]) -> None:
    """Read every file once so no timed run pays for the first, cold read."""
    for path in files:
        path.read_bytes()


def cpuinfo(field: str) -> str | None:
    """The value of ``field`` in /proc/cpuinfo (Linux's), or None."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        return next((line.split(":", 1)[1].strip() for line in fh if line.startswith(field)), None)
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set((cpuinfo("flags") or "").split())


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(device: str | None = None) -> dict:
    """What the numbers depend on; torch is imported only when a device is named."""
    info = {
        "date": datetime.date.today().isoformat(),
        # This project's commit, or the content hash of its code in a copy without its own .git.
        "code": provenance.code_line(provenance.code()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_bf16": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}) or "none (bf16 is emulated)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }
    if device is not None:
        import torch

        try:  # the GPU study's machine has none; the benchmarks that need it say so themselves
            import torchvision
        except ImportError:
            torchvision = None
        info.update(torch=torch.__version__,
                    torchvision=torchvision.__version__ if torchvision else "not installed",
                    threads=torch.get_num_threads(), device=device_name(device))
    return info


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({cpu_model()})"


def describe(info: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    from catgan.fileio import write_json as atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(payload, default=str)))
