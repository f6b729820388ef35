"""File names that are not UTF-8, in a folder or a zip source, through the real `dvc repro`."""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import clone_project, sh
from imagefactory import noise, png_bytes

from catgan.data.names import portable

LATIN1 = b"caf\xe9.png"  # a Latin-1 name, as disks and zips from other systems hold
STAND_IN = portable(LATIN1)


def test_stand_ins_are_utf8_deterministic_and_keep_the_extension():
    assert portable("chat.jpg".encode()) == "chat.jpg" and portable("café.jpg".encode()) == "café.jpg"
    assert STAND_IN == portable(LATIN1) and STAND_IN.startswith("caf_-") and STAND_IN.endswith(".png")
    assert portable(b"caf\xe8.png") != STAND_IN
    assert re.fullmatch(r"_-[0-9a-f]{10}", portable(b"\xff\xfe"))
    assert re.fullmatch(r"x\._-[0-9a-f]{10}", portable(b"x.\xe9\xe9"))  # no readable extension


def write_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "plain.png").write_bytes(png_bytes(noise(40, 40, 1)))
    with open(os.path.join(os.fsencode(root), LATIN1), "wb") as fh:
        fh.write(png_bytes(noise(40, 40, 2)))
    with open(os.path.join(os.fsencode(root / "sub"), LATIN1), "wb") as fh:
        fh.write(png_bytes(noise(40, 40, 3)))
    return root


def write_zip(path: Path) -> Path:
    """plain.png, a cp437-era entry (no UTF-8 flag, Latin-1 bytes) and an entry flagged UTF-8 whose
    bytes are UTF-8: zipfile writes str names, so the Latin-1 one is patched in afterwards."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("plain.png", png_bytes(noise(40, 40, 1)))
        zf.writestr("cats/cafX.png", png_bytes(noise(40, 40, 2)))
        zf.writestr("cats/chat-é.png", png_bytes(noise(40, 40, 3)))
    data = path.read_bytes().replace(b"cats/cafX.png", b"cats/" + LATIN1)
    assert data.count(b"cats/" + LATIN1) == 2  # local header and central directory
    path.write_bytes(data)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_dvc_repro_hashes_a_fetch_of_non_utf8_names(tmp_path, layout):
    source = write_folder(tmp_path / "photos") if layout == "folder" else \
        write_zip(tmp_path / "photos.zip")
    project = clone_project(tmp_path / "catgan", {"data": {
        "source": "folder", "path": str(source), "workers": 1, "min_size": 16}})
    sh(project, "dvc", "repro", "preprocess")

    raw = project / "data" / "raw"
    names = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())
    prefix = "cats/" if layout == "zip" else ""
    renamed = {"folder": {STAND_IN: "caf\\xe9.png", f"sub/{STAND_IN}": "sub/caf\\xe9.png"},
               "zip": {f"cats/{STAND_IN}": "cats/caf\\xe9.png"}}[layout]
    expected = sorted([".catgan-fetch.json", "plain.png", *renamed] +
                      (["cats/chat-é.png"] if layout == "zip" else []))
    assert names == expected
    record = json.loads((raw / ".catgan-fetch.json").read_text())
    assert record["renamed"] == renamed and prefix in next(iter(record["renamed"]))
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert manifest["files_used"] == 3 and manifest["skipped"] == {}
    # Hashed and cached: a second repro has nothing to do, and the cache restores the output.
    assert "Running stage" not in sh(project, "dvc", "repro", "preprocess")
    assert "up to date" in sh(project, "dvc", "status", "fetch", "preprocess")
