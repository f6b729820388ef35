"""Hostile and broken zips through the real fetch stage (data.source: folder, data.path: the zip).

tests/test_archive.py covers safe_extract_zip itself; here each archive goes through the stage
script as DVC runs it: exit code 2, one `error:` line naming the zip and the entry, no traceback,
and not one byte written anywhere in the temporary tree.
"""
from __future__ import annotations

import os
import random
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TINY, merge, write_params


def make_zip(path: Path, entries: list) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def special(name: str, kind: int, data: bytes | str = b"") -> tuple[zipfile.ZipInfo, bytes | str]:
    """An entry whose Unix mode says symlink, device, ...: its data is the link target."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode in external_attr counts
    info.external_attr = (kind | 0o777) << 16
    return info, data


def encrypted(path: Path) -> Path:
    """Set the 'encrypted' flag in both headers; zipfile itself cannot write encrypted entries."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | 1)
    path.write_bytes(bytes(data))
    return path


def build(case: str, tmp: Path) -> tuple[Path, str, str]:
    """The archive for ``case``, the entry the error must name ('' for none) and why."""
    zip_path, outside = tmp / f"{case}.zip", tmp / "outside"
    good = ("cats/ok.jpg", b"\xff\xd8 a fine first entry")
    if case == "dotdot":
        return make_zip(zip_path, [good, ("cats/../../outside/evil.jpg", b"x")]), \
            "cats/../../outside/evil.jpg", "'..'"
    if case == "absolute":
        evil = str(outside / "abs_evil.jpg")
        return make_zip(zip_path, [good, (evil, b"x")]), evil, "absolute path"
    if case == "symlink":
        return make_zip(zip_path, [good, special("cats/passwd.jpg", stat.S_IFLNK, "/etc/passwd")]), \
            "cats/passwd.jpg", "symlink"
    if case == "through_link":  # a link to a folder outside, then a file "inside" that link
        entries = [special("cats/door", stat.S_IFLNK, str(outside)), ("cats/door/evil.jpg", b"x")]
        return make_zip(zip_path, [good, *entries]), "cats/door", "symlink"
    if case == "device":
        return make_zip(zip_path, [good, special("cats/zero.jpg", stat.S_IFCHR)]), \
            "cats/zero.jpg", "special file"
    if case == "bomb":
        return make_zip(zip_path, [good, ("cats/bomb.jpg", bytes(8 << 20))]), "cats/bomb.jpg", \
            "zip bomb"
    if case == "duplicate":
        return make_zip(zip_path, [good, good]), good[0], "appears twice"
    if case == "file_and_folder":
        return make_zip(zip_path, [good, ("cats/ok.jpg/inner.jpg", b"x")]), \
            "cats/ok.jpg/inner.jpg", "clashes with another entry as file and folder"
    if case == "name_too_long":
        name = "cats/" + "c" * 300 + ".jpg"
        return make_zip(zip_path, [good, (name, b"x")]), name, "File name too long"
    if case == "encrypted":
        return encrypted(make_zip(zip_path, [good])), good[0], "encrypted"
    if case == "truncated":
        make_zip(zip_path, [good, ("cats/noise.jpg", random.Random(1).randbytes(4000))])
        zip_path.write_bytes(zip_path.read_bytes()[:3000])
        return zip_path, "", "corrupt or unsupported zip"
    assert case == "random_bytes"
    zip_path.write_bytes(random.Random(2).randbytes(5000))
    return zip_path, "", "corrupt or unsupported zip"


CASES = ["dotdot", "absolute", "symlink", "through_link", "device", "bomb", "duplicate",
         "file_and_folder", "name_too_long", "encrypted", "truncated", "random_bytes"]


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` (hidden ones too) with its bytes, link target or folder mark."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = (f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir()
                    else path.read_bytes())
    return out


@pytest.mark.parametrize("case", CASES)
def test_fetch_stage_refuses_archive(tmp_path, case):
    (tmp_path / "outside").mkdir()
    zip_path, entry, why = build(case, tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, merge(TINY, {"data": {"source": "folder", "path": str(zip_path)}}))
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "fetch.py")], cwd=project,
                          capture_output=True, text=True, timeout=120,
                          env={**env, "DVC_ROOT": str(project)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {zip_path}: "), proc.stderr
    assert f"entry '{entry}'" in lines[0] if entry else "entry" not in lines[0]
    assert why in lines[0]
    assert "use a clean copy" in lines[0] or "download it again" in lines[0]
    after = snapshot(tmp_path)
    # The stage may leave data/ itself (the folder that would hold data/raw), empty.
    if after.get("project/data") == "dir" and "project/data" not in before:
        del after["project/data"]
    assert after == before
