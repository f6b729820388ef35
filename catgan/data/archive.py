"""Zip extraction that refuses path traversal, links and zip bombs, and leaves no half folder."""
from __future__ import annotations

import contextlib
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from catgan.data.names import escaped, portable
from catgan.errors import UserError
from catgan.fileio import atomic_dir

_CHUNK = 1 << 20
# A few KB of zeros compress at huge ratios and are harmless: the ratio matters for big entries.
_RATIO_FLOOR_BYTES = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_UTF8_FLAG = 0x800  # general purpose bit 11: the entry's name is stored as UTF-8


def _refuse(zip_path: Path, name: str, why: str) -> UserError:
    return UserError(f"{zip_path}: entry '{name}' {why}; refusing to extract this archive: "
                     "use a clean copy, or repack it without that entry")


def _entry_parts(zip_path: Path, info: zipfile.ZipInfo, max_ratio: float) -> tuple[str, ...]:
    """The entry's path parts inside the archive, or a UserError if the entry is unsafe."""
    name = info.filename
    # Zips made on Windows may use backslashes; treat them as separators so "..\\x" is caught too.
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise _refuse(zip_path, name, "has an absolute path")
    parts = tuple(p for p in PurePosixPath(posix).parts if p not in ("", "."))
    if ".." in parts:
        raise _refuse(zip_path, name, "points outside the archive with '..'")
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refuse(zip_path, name, "is a symlink" if stat.S_ISLNK(mode) else "is a special file")
    if info.flag_bits & 0x1:
        raise _refuse(zip_path, name, "is encrypted (provide an unencrypted zip)")
    if info.file_size > max(_RATIO_FLOOR_BYTES, max_ratio * max(info.compress_size, 1)):
        raise _refuse(zip_path, name, f"expands {info.compress_size} bytes to {info.file_size} "
                                      f"(ratio above {max_ratio:g}), like a zip bomb")
    return parts


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int,
                zip_path: Path, max_ratio: float) -> int:
    """Stream one entry to ``target``, counting bytes rather than trusting its header."""
    limit = min(info.file_size, budget, max(_RATIO_FLOOR_BYTES, max_ratio * info.compress_size))
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while block := src.read(_CHUNK):
            written += len(block)
            if written > limit:
                raise _refuse(zip_path, info.filename, "expands beyond its declared size or the "
                                                       "limits, like a zip bomb")
            dst.write(block)
    return written


def _extract(zip_path: Path, into, max_ratio: float, max_total_bytes: int) -> tuple[int, dict]:
    """Check every entry, then extract them into the folder that the context manager ``into`` gives.

    Raises UserError, before entering ``into``, for entries with '..', absolute paths or drive
    letters, links or other special files, encryption, a total size above ``max_total_bytes``, an
    entry over 1 MiB compressed more than ``max_ratio`` times; and for corrupt archives, also
    while extracting.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise UserError(f"{zip_path}: zip file not found")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            plan, seen, renamed = [], set(), {}
            for info in zf.infolist():
                # Back to the stored bytes: zipfile decoded them as cp437 unless flagged UTF-8.
                encoding = "utf-8" if info.flag_bits & _UTF8_FLAG else "cp437"
                raw = [part.encode(encoding) for part in _entry_parts(zip_path, info, max_ratio)]
                parts = tuple(portable(part) for part in raw)
                if parts in seen and not info.is_dir():
                    raise _refuse(zip_path, info.filename, "appears twice")
                if parts:
                    seen.add(parts)
                    plan.append((info, parts))
                    if not info.is_dir() and "/".join(parts).encode() != b"/".join(raw):
                        renamed["/".join(parts)] = escaped(b"/".join(raw))
            declared = sum(info.file_size for info, _ in plan)
            if declared > max_total_bytes:
                raise UserError(f"{zip_path}: archive expands to {declared} bytes, above the limit "
                                f"of {max_total_bytes}, like a zip bomb; refusing to extract it")
            with into as folder:
                return _write(zf, plan, folder, zip_path, max_ratio, max_total_bytes), renamed
    except UnicodeDecodeError as err:  # zipfile decodes names flagged UTF-8 strictly, on open
        raise UserError(f"{zip_path}: an entry flagged as UTF-8 has a name that is not UTF-8 "
                        f"({err.object[:60]!r}); unzip it with a tool that accepts it, or re-create "
                        "the zip, and set data.path to the folder") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        raise UserError(f"{zip_path}: corrupt or unsupported zip ({err}); "
                        "download it again") from None


def _write(zf: zipfile.ZipFile, plan: list, folder: Path, zip_path: Path, max_ratio: float,
           max_total_bytes: int) -> int:
    budget, files = max_total_bytes, 0
    for info, parts in plan:
        target = folder.joinpath(*parts)
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            budget -= _copy_entry(zf, info, target, budget, zip_path, max_ratio)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            raise _refuse(zip_path, info.filename, "clashes with another entry as "
                                                   "file and folder") from None
        except OSError as err:  # a name too long for this file system, a full disk
            raise _refuse(zip_path, info.filename,
                          f"cannot be written here ({err.strerror})") from None
        files += 1
    return files


def safe_extract_zip(zip_path: Path, dest: Path, *, max_ratio: float = 200.0,
                     max_total_bytes: int = 4 << 30) -> int:
    """Replace ``dest`` with the complete contents of ``zip_path``; return the number of files."""
    return _extract(zip_path, atomic_dir(dest), max_ratio, max_total_bytes)[0]


def extract_zip(zip_path: Path, folder: Path, *, max_ratio: float = 200.0,
                max_total_bytes: int = 4 << 30) -> tuple[int, dict[str, str]]:
    """Extract all of ``zip_path`` into ``folder``: (files, {portable stand-in: original name})."""
    return _extract(zip_path, contextlib.nullcontext(Path(folder)), max_ratio, max_total_bytes)
