"""Training checkpoints: everything needed to continue a run bit for bit, written atomically.

``save`` keeps two files: ``last.pt`` and the one it replaced, ``prev.pt`` beside it. Each is a plain
``torch.save`` zip whose archive comment holds the sha256 of the rest, so ``load`` catches a
truncated or altered file before ``torch.load`` reads it (and falls back to ``prev.pt``), while
``torch.load`` still opens the file directly.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from catgan.fileio import atomic_path

log = logging.getLogger(__name__)

_TAG = b"catgan-sha256:"
_COMMENT = len(_TAG) + 64
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the comment
_EOCD_SIZE = 22
# (inode, size, mtime) of files this process wrote or verified, so that rotating last.pt into
# prev.pt every epoch does not re-read and hash a big file just written.
_trusted: dict[str, tuple[int, int, int]] = {}


class Damaged(Exception):
    """A checkpoint file that must not be loaded; the message says why."""


def previous(path: Path) -> Path:
    """Where ``save`` keeps the checkpoint that ``path`` replaced: ``last.pt`` -> ``prev.pt``."""
    return path.with_name(f"prev{path.suffix}")


def rng_state(data_gen: torch.Generator) -> dict:
    """Every RNG a training run touches, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached), "kind": kind},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "data": data_gen.get_state(),
    }


def restore_rng_state(state: dict, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    data_gen.set_state(state["data"])


def seal(data: bytes) -> bytes:
    """A ``torch.save`` zip with its sha256 written into the (empty) zip archive comment."""
    if data[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or data[-2:] != b"\0\0":
        raise ValueError("torch.save did not end its zip with an empty archive comment")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:-2] + _COMMENT.to_bytes(2, "little") + _TAG + digest


def unseal(data: bytes) -> bytes:
    """The zip that ``seal`` was given, or Damaged when the checksum is missing or wrong."""
    end = len(data) - _COMMENT
    eocd = end - _EOCD_SIZE
    if eocd < 0 or data[eocd:eocd + 4] != _EOCD or data[end - 2:end] != _COMMENT.to_bytes(2, "little") \
            or data[end:end + len(_TAG)] != _TAG:
        raise Damaged("no checksum at its end: it is truncated, or was not written by this catgan")
    original = data[:end - 2] + b"\0\0"
    if hashlib.sha256(original).hexdigest().encode() != data[end + len(_TAG):]:
        raise Damaged("its sha256 does not match its contents: the file was damaged or altered")
    return original


def save(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically; the intact file it replaces becomes ``prev.pt``.
    A full disk raises UserError (from catgan.fileio) and leaves both files as they were."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = seal(buf.getvalue())
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if _intact(path):
            _keep_as_previous(path)
        elif path.exists():  # the current prev.pt stays the fallback
            log.warning("not keeping the damaged %s as the previous checkpoint", path)
    _trust(path)


def _keep_as_previous(path: Path) -> None:
    with atomic_path(previous(path)) as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)  # the same blocks: no copy of a big file every epoch
        except OSError:  # file systems without hard links
            shutil.copyfile(path, tmp)
    _trust(previous(path))


def load(path: Path) -> dict | None:
    """The checkpoint at ``path``; if that one is damaged, the previous one; else None. The log
    names every damaged file and why, and which checkpoint the run continues from, if any."""
    path = Path(path)
    if not path.exists():
        return None
    for candidate in (path, previous(path)):
        if not candidate.exists():
            break
        try:
            state = _read(candidate)
        except Damaged as err:
            log.warning("checkpoint %s is damaged (%s): not loading it", candidate, err)
            continue
        if candidate != path:
            log.warning("continuing from the previous checkpoint %s (epoch %s) instead",
                        candidate, state.get("epoch"))
        return state
    log.warning("no intact checkpoint left in %s: training starts from scratch", path.parent)
    return None


def _read(path: Path) -> dict:
    try:
        data = path.read_bytes()
        signature = _signature(path)
    except OSError as err:
        raise Damaged(f"unreadable: {err.strerror or err}") from None
    body = unseal(data)
    try:
        state = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # a sound file this torch cannot read is as unusable as a damaged one
        raise Damaged(f"torch.load failed: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise Damaged(f"it holds a {type(state).__name__}, not a checkpoint dict")
    _trusted[str(path)] = signature
    return state


def _intact(path: Path) -> bool:
    try:
        if _trusted.get(str(path)) == _signature(path):
            return True
        unseal(path.read_bytes())
    except (OSError, Damaged):
        return False
    _trust(path)
    return True


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _trust(path: Path) -> None:
    _trusted[str(path)] = _signature(path)
