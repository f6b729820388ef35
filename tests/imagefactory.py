"""Tiny generated image trees and zips for the data tests, messy the way real downloads are."""
from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# What preprocess(min_size=16) must report for write_messy_tree, paths relative to its root.
MESSY_SKIPPED = {
    "corrupt": ["broken.jpg"],
    "empty": ["empty.jpg"],
    "not_an_image": ["notes.jpg"],
    "too_small": ["tiny.png"],
}
MESSY_DUPLICATES = {"z_copies/gray_again.bmp": "gray.png", "z_copies/photo_copy.jpg": "photo.jpg"}
MESSY_FOUND = 12
MESSY_USED = 6


def noise(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """Random pixels: every resize or crop mistake shows up in them."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_messy_tree(root: Path) -> Path:
    """Good images in many modes, broken files, a tiny image, duplicates and a non-image file."""
    (root / "z_copies").mkdir(parents=True)
    (root / "album.jpg").mkdir()  # a folder named like an image: walked into, not decoded
    noise(40, 30, 1).save(root / "album.jpg" / "inside.png")
    noise(80, 60, 0).save(root / "photo.jpg", quality=90)
    shutil.copyfile(root / "photo.jpg", root / "z_copies" / "photo_copy.jpg")
    gray = noise(48, 64, 2, "L")
    gray.save(root / "gray.png")
    gray.save(root / "z_copies" / "gray_again.bmp")  # same pixels, other bytes and format
    noise(50, 40, 3, "RGBA").save(root / "rgba.png")
    noise(36, 36, 4).quantize(16).save(root / "palette.png")
    deep = np.random.default_rng(5).integers(0, 65536, size=(40, 32), dtype=np.uint16)
    Image.fromarray(deep).save(root / "deep16.png")
    noise(8, 8, 6).save(root / "tiny.png")
    full = io.BytesIO()
    noise(64, 64, 7).save(full, format="JPEG", quality=95)
    (root / "broken.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) * 3 // 5])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not a picture, just text with a .jpg name\n")
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    return root


def zip_tree(root: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file under ``root`` as ``prefix + relative path`` (Kaggle zips use ``cats/``)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder, name)
                zf.write(path, prefix + path.relative_to(root).as_posix())
    return zip_path


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative posix path -> bytes of every file under ``root``."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}
