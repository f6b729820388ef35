"""The fetch stage: raw images from Kaggle, a local folder or zip, or the synthetic generator."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from catgan.data.archive import extract_zip
from catgan.data.kaggle_source import fetch_kaggle
from catgan.data.names import escaped, portable
from catgan.errors import UserError
from catgan.fileio import atomic_dir, write_json

log = logging.getLogger(__name__)

# What was fetched, and the original of every renamed file; hidden, so preprocess passes it by.
MANIFEST = ".catgan-fetch.json"


def _warn_unlisted(err: OSError) -> None:
    """os.walk's onerror: a folder that cannot be listed is left out, but not silently."""
    log.warning("data.path: skipping %s (%s)", err.filename, err.strerror)


def _check_folder_source(src: Path, out_dir: Path) -> None:
    if not src.exists():
        raise UserError(f"data.path: {str(src)!r} does not exist; set data.path to a folder of "
                        "images or a .zip of them")
    real_src, real_out = src.resolve(), out_dir.resolve()
    if real_src.is_relative_to(real_out) or real_out.is_relative_to(real_src):
        raise UserError(f"data.path: {src} overlaps the fetch output {out_dir}; "
                        "point it somewhere else")
    if src.is_file() and src.suffix.lower() != ".zip":
        raise UserError(f"data.path: {src} is a file but not a .zip; give a folder or a .zip")
    if not src.is_file() and not src.is_dir():  # reading a FIFO or a device could block for ever
        raise UserError(f"data.path: {src} is neither a folder nor a file (a FIFO or a device?); "
                        "give a folder of images or a .zip of them")


def copy_folder(src: Path, folder: Path) -> tuple[int, dict[str, str]]:
    """Copy the files under ``src`` into ``folder``: (files, {renamed path: original})."""
    count, seen, renamed = 0, set(), {}
    for root, dirs, files in os.walk(src, followlinks=True, onerror=_warn_unlisted):
        # Linked folders are followed, as users expect; remembering real paths stops loops.
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen)
        rel = Path(root).relative_to(src).parts
        for name in sorted(files):
            source = Path(root, name)
            if not source.is_file():
                log.warning("data.path: skipping %s (broken link or special file)", source)
                continue
            raw = [os.fsencode(part) for part in (*rel, name)]
            parts = [portable(part) for part in raw]
            target = folder.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(source, target)
            except PermissionError:
                log.warning("data.path: skipping %s (not readable)", source)
                continue
            if "/".join(parts).encode() != b"/".join(raw):
                renamed["/".join(parts)] = escaped(b"/".join(raw))
            count += 1
    return count, renamed


def fetch(source: str, out_dir: Path, *, kaggle_dataset: str, path: str, synthetic_count: int,
          seed: int, kaggle_timeout_s: float = 60.0) -> None:
    """Replace ``out_dir`` as a whole with raw images from ``source`` (one of config.SOURCES)."""
    out_dir = Path(out_dir)
    if source == "folder":
        if not path:
            raise UserError("data.path is empty; data.source=folder needs data.path set to a "
                            "folder of images or a .zip of them")
        _check_folder_source(Path(path), out_dir)
    with atomic_dir(out_dir) as tmp:
        if source == "kaggle":
            record = fetch_kaggle(kaggle_dataset, tmp, kaggle_timeout_s)
        elif source == "folder":
            src = Path(path)
            files, renamed = extract_zip(src, tmp) if src.is_file() else copy_folder(src, tmp)
            record = {"source": "folder", "files": files, "renamed": renamed}
        elif source == "synthetic":
            from catgan.data.synthetic import write_synthetic

            write_synthetic(tmp, synthetic_count, seed)
            return
        else:
            raise ValueError(f"unknown data source {source!r}; params.yaml is checked by catgan.config")
        write_json(tmp / MANIFEST, record)
    log.info("fetched %d files (%s) into %s, %d renamed to portable names", record["files"],
             source, out_dir, len(record["renamed"]))
