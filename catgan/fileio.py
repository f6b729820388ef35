"""Atomic writes: a reader sees the old file or the complete new one, never half of one.

Temp files and folders sit beside their target as ``.<name>.<pid>.<random>.tmp``. A process killed
mid-write leaves its temp behind; the next write to the same target removes temps whose process
is gone. A full disk becomes a UserError that names the target. Files and folders get the mode a
plain ``open()`` or ``mkdir`` would give them (0666 or 0777 less the umask), so a teammate or a web
server sharing the folder can read them; a file that holds a secret asks for 0600.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

from catgan.errors import UserError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", mode: int = 0o666):
    """Yield a temp path beside ``target``; rename it onto ``target`` only if the block succeeds.
    The file has ``mode`` less the umask, as ``os.open`` gives it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = _new_temp(target, suffix, lambda path: os.close(
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)))
    try:
        with _disk_full_is_user_error(target):
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp folder beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = _new_temp(target, "", lambda path: os.mkdir(path, 0o777))
    try:
        with _disk_full_is_user_error(target):
            yield tmp
            # Named like a temp: if a kill lands between the two renames, the next write sweeps it.
            old = target.with_name(f"{_temp_prefix(target)}old.tmp")
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preallocate(path: str | os.PathLike) -> None:
    """Give every byte of ``path`` its disk blocks now: a sparse file written through a memory map
    (a fresh ``np.lib.format.open_memmap``) dies of SIGBUS on a full disk; this raises ENOSPC."""
    if not hasattr(os, "posix_fallocate"):  # macOS: no way to reserve; the write will fail later
        return
    with open(path, "rb+") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            os.posix_fallocate(fh.fileno(), 0, size)


def write_bytes(target: str | os.PathLike, data: bytes, mode: int = 0o666) -> None:
    with atomic_path(target, mode=mode) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str, mode: int = 0o666) -> None:
    write_bytes(target, text.encode("utf-8"), mode)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _disk_full_is_user_error(target: Path):
    try:
        yield
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        free = shutil.disk_usage(target.parent).free if target.parent.exists() else 0
        raise UserError(
            f"{target}: the disk is full ({os.strerror(err.errno)}; {free / 2**20:.1f} MiB free on "
            f"the file system of {target.parent}) while writing it, so it was not written and any "
            "previous version is untouched; free some space and run again") from None


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _new_temp(target: Path, suffix: str, create) -> Path:
    """A fresh temp name beside ``target``, made by ``create``. Not tempfile's mkstemp or mkdtemp:
    they make 0600 files and 0700 folders whatever the umask."""
    for _ in range(100):
        path = target.with_name(f"{_temp_prefix(target)}{secrets.token_hex(4)}{suffix}.tmp")
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temp name", str(target.parent))


def _remove_stale_temps(target: Path) -> None:
    """Remove temps of ``target`` left by processes that no longer run (on this machine)."""
    if os.name != "posix":
        return
    head = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True
