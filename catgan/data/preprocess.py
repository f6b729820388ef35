"""The preprocess stage: a raw image folder to one uint8 N x 3 x S x S array plus a manifest.

Workers decode each image exactly like torchvision's ``Resize(S)`` + ``CenterCrop(S)`` on PIL, into
its row of a memory-mapped staging .npy, so memory stays flat however many images there are.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catgan.data.names import escaped
from catgan.errors import UserError
from catgan.fileio import atomic_dir, preallocate, write_json
from catgan.progress import progress

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico",
})
# macOS zips carry AppleDouble "._x.jpg" twins under __MACOSX; they are metadata, not images.
_IGNORED_DIRS = frozenset({"__MACOSX"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_COPY_ROWS = 1024


def _display(rel: str) -> str:
    """A manifest-safe name: undecodable bytes become \\xNN instead of lone surrogates."""
    return escaped(os.fsencode(rel))


def _one_line(name: str) -> str:
    """``name`` with line breaks and other control characters escaped, for one-line errors."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def _walk(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Sorted relative paths: (image files, unreadable image entries, ignored entries)."""
    images, unreadable, ignored = [], [], []
    seen: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            st = os.stat(root / rel)
            if (st.st_dev, st.st_ino) in seen:  # a linked folder seen before: a loop or a repeat
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(root / rel) as it:
                entries = list(it)
        except OSError:
            unreadable.append(rel + "/")
            continue
        for entry in entries:
            path = os.path.join(rel, entry.name)
            try:  # after following links; a link loop raises
                kind = "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
            except OSError:
                kind = "other"
            if entry.name.startswith(".") or entry.name in _IGNORED_DIRS:
                ignored.append(path)
            elif kind == "dir":
                stack.append(path)
            elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored.append(path)
            elif kind == "file":
                images.append(path)
            else:  # broken or looping link, fifo, device: opening could fail or block
                unreadable.append(path)
    return tuple(sorted(paths, key=os.fsencode) for paths in (images, unreadable, ignored))


def _output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's _compute_resized_output_size for an int size, as (width, height)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Bilinear resize of the shorter side to ``size``, then a centre crop: torchvision on PIL."""
    new_w, new_h = _output_size(*img.size, size)
    # The Kaggle cats are already 64x64: they skip both steps, which would only copy them.
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.BILINEAR)
    if img.size == (size, size):
        return img
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: transparency over white, 16-bit scaled rather than clipped."""
    if img.mode in _SIXTEEN_BIT:
        # convert("RGB") clips 16-bit values at 255; scale 0..65535 to 0..255 with rounding instead.
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L").convert("RGB")
    if img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _decode(path: str, image_size: int, min_size: int) -> tuple[str | None, np.ndarray | None]:
    """One file to (skip reason, uint8 CHW pixels)."""
    try:
        fh = open(path, "rb")
    except OSError:
        return "unreadable", None
    with fh:
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                return "empty", None
            with Image.open(fh) as img:
                if min(img.size) < min_size:
                    return "too_small", None
                # A needle-thin image passes Pillow's bomb check, yet scaling its short side up to
                # image_size could take gigabytes: the resized image is held to the same limit.
                new_w, new_h = _output_size(*img.size, image_size)
                if Image.MAX_IMAGE_PIXELS and new_w * new_h > Image.MAX_IMAGE_PIXELS:
                    return "too_large", None
                img.load()  # first frame only for animations: Image.open leaves us on frame 0
                try:
                    ImageOps.exif_transpose(img, in_place=True)
                except Exception:  # a broken EXIF block does not make the pixels wrong
                    pass
                hwc = resize_center_crop(to_rgb(img), image_size).tobytes()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return "too_large", None
        except UnidentifiedImageError:
            return "not_an_image", None
        except Exception:  # Pillow reports damaged data as OSError, SyntaxError, ValueError, ...
            return "corrupt", None
    # tobytes plus a numpy transpose cost less than np.asarray(img), which copies once more.
    return None, np.frombuffer(hwc, np.uint8).reshape(image_size, image_size, 3).transpose(2, 0, 1)


# Per process: the staging array (N x 3 x S x S memmap) and the size limit, set by _start.
_rows: np.ndarray | None = None
_min_size = 0


def _start(staging: str, min_size: int) -> None:
    """Set up a decoding process: map the staging .npy, make decompression bombs errors."""
    global _rows, _min_size
    # Once per process: a catch_warnings block per image costs more than a 64x64 JPEG decode.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    _rows, _min_size = np.load(staging, mmap_mode="r+"), min_size


def _decode_into_row(item: tuple[int, str]) -> tuple[str | None, bytes | None]:
    """Decode file ``item = (row, path)`` into its staging row; return (skip reason, digest)."""
    row, path = item
    reason, pixels = _decode(path, _rows.shape[-1], _min_size)
    if reason is not None:
        return reason, None
    # Writing here, not in the parent, saves pickling every image through a pipe.
    _rows[row] = pixels
    return None, hashlib.blake2b(_rows[row], digest_size=16).digest()


def _decode_all(staging: Path, paths: list[str], min_size: int, workers: int):
    """Fill the staging rows from ``paths``; yield (skip reason, pixel digest) in path order."""
    global _rows
    items = enumerate(paths)
    if workers <= 1 or len(paths) < 2:
        with warnings.catch_warnings():
            _start(str(staging), min_size)
            try:
                yield from map(_decode_into_row, items)
            finally:
                _rows = None
        return
    # Big chunks keep the per-image IPC cost small; 4 chunks per worker still balance the load.
    chunk = max(1, min(256, len(paths) // (workers * 4)))
    with multiprocessing.Pool(min(workers, len(paths)), _start, (str(staging), min_size)) as pool:
        yield from pool.imap(_decode_into_row, items, chunksize=chunk)


def _finish(staging: Path, final: Path, keep: np.ndarray) -> str:
    """Write the staging rows flagged in ``keep`` as the .npy ``final``; return their sha256."""
    src = np.load(staging, mmap_mode="r", allow_pickle=False)
    rows = np.flatnonzero(keep)
    header = {"descr": np.lib.format.dtype_to_descr(src.dtype), "fortran_order": False,
              "shape": (len(rows), *src.shape[1:])}
    digest = hashlib.sha256()
    # Plain writes, not a second memmap: page faults on a fresh mapping cost more than the copy.
    with open(final, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, len(rows), _COPY_ROWS):
            block = src[rows[start:start + _COPY_ROWS]]
            digest.update(block)
            fh.write(block)
    del src
    staging.unlink()
    return digest.hexdigest()


def preprocess(raw_dir: Path, out_dir: Path, *, image_size: int, min_size: int, dedup: bool,
               max_bad_fraction: float, workers: int) -> dict:
    """Replace ``out_dir`` with ``images.npy`` (uint8 N x 3 x S x S) and ``manifest.json``.

    ``dedup`` drops an image whose pixels equal an earlier one's (sorted path order). Returns the
    manifest; raises UserError, leaving no output, if no image is usable or more than
    ``max_bad_fraction`` of them were skipped.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: raw image folder not found; run the fetch stage first "
                        "(dvc repro fetch)")
    files, unreadable, ignored = _walk(raw_dir)
    found = len(files) + len(unreadable)
    if not (files or unreadable or ignored):
        raise UserError(f"{raw_dir}: the raw image folder is empty; check data.source and "
                        "data.path, then run the fetch stage again (dvc repro --force fetch)")
    if not files:
        others = sorted(unreadable + ignored)
        raise UserError(f"{raw_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found "
                        f"among its {len(others)} entries (e.g. {_one_line(_display(others[0]))}); "
                        "check data.source and data.path")
    skipped: dict[str, list[str]] = defaultdict(list)
    skipped["unreadable"] += [_display(p) for p in unreadable]
    duplicates: dict[str, str] = {}
    first_seen: dict[bytes, str] = {}
    keep = np.zeros(len(files), dtype=bool)
    shape = (3, image_size, image_size)
    with atomic_dir(out_dir) as tmp:
        staging = tmp / "staging.npy"
        # Preallocated on disk and filled by the workers: memory stays flat however many images.
        np.lib.format.open_memmap(staging, mode="w+", dtype=np.uint8, shape=(len(files), *shape))
        preallocate(staging)  # a full disk is an error now, not a SIGBUS in a worker later
        results = _decode_all(staging, [os.path.join(raw_dir, f) for f in files], min_size,
                              workers or os.cpu_count() or 1)
        for row, (reason, digest) in enumerate(progress(results, "preprocess", total=len(files),
                                                        unit="img")):
            name = _display(files[row])
            if reason is not None:
                skipped[reason].append(name)
            elif dedup and digest in first_seen:
                duplicates[name] = first_seen[digest]
            else:
                first_seen[digest] = name
                keep[row] = True
        kept = int(keep.sum())
        skipped = {reason: paths for reason, paths in sorted(skipped.items()) if paths}
        if kept == 0:
            raise UserError(f"{raw_dir}: none of the {found} image files is usable "
                            f"({', '.join(f'{r}: {len(p)}' for r, p in skipped.items())})")
        bad = sum(len(v) for v in skipped.values())
        if bad / found > max_bad_fraction:
            worst = sorted(skipped.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:3]
            detail = "; ".join(f"{why}: {len(paths)} (e.g. {', '.join(map(_one_line, paths[:3]))})"
                               for why, paths in worst)
            raise UserError(
                f"{raw_dir}: {bad} of {found} image files are unusable ({bad / found:.1%}, above "
                f"data.max_bad_fraction={max_bad_fraction:g}): {detail}. Fix or remove those "
                "files, or raise data.max_bad_fraction in params.yaml")
        content_hash = _finish(staging, tmp / "images.npy", keep)
        manifest = {
            "files_found": found,
            "files_used": kept,
            "duplicates_removed": duplicates,
            "skipped": skipped,
            "ignored": [_display(p) for p in ignored],
            "image_size": image_size,
            "min_size": min_size,
            "dedup": dedup,
            "shape": [kept, *shape],
            "dtype": "uint8",
            "content_hash": content_hash,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def load_images(path: Path) -> np.ndarray:
    """The preprocessed uint8 N x 3 x H x W array at ``path``, memory-mapped read-only."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the preprocess stage first "
                        "(dvc repro preprocess)") from None
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npy image array ({err}); "
                        "rerun preprocess") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{path}: holds a {type(arr).__name__}, not one array; rerun preprocess")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[1] != 3 \
            or arr.shape[2] != arr.shape[3]:
        raise UserError(f"{path}: expected a non-empty uint8 N x 3 x S x S array, got {arr.dtype} "
                        f"{arr.shape}; rerun preprocess")
    return arr
