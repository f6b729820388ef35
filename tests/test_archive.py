"""safe_extract_zip: complete extraction, and refusal of every hostile or broken archive."""
from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from catgan.data.archive import safe_extract_zip
from catgan.errors import UserError


def make_zip(path: Path, entries: list, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def assert_nothing_written(tmp_path: Path, zip_path: Path, dest: Path) -> None:
    assert not dest.exists()
    assert sorted(tmp_path.iterdir()) == [zip_path]  # no temp folders, nothing beside dest


def test_extracts_nested_files_and_replaces_dest(tmp_path):
    zip_path = make_zip(tmp_path / "cats.zip", [
        ("cats/1.jpg", b"one"), ("cats/deep/2.jpg", b"two" * 1000), ("cats/empty/", b""),
        ("./top.txt", b"t"),
    ])
    dest = tmp_path / "raw"
    (dest / "stale").mkdir(parents=True)
    assert safe_extract_zip(zip_path, dest) == 3
    assert (dest / "cats" / "1.jpg").read_bytes() == b"one"
    assert (dest / "cats" / "deep" / "2.jpg").read_bytes() == b"two" * 1000
    assert (dest / "cats" / "empty").is_dir()
    assert (dest / "top.txt").read_bytes() == b"t"
    assert not (dest / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cats.zip", "raw"]


@pytest.mark.parametrize("evil", ["../evil.txt", "cats/../../evil.txt", "..\\evil.txt",
                                  "C:/evil.txt", "ABSOLUTE"])
def test_rejects_paths_leaving_dest(tmp_path, evil):
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "abs_evil.txt")  # inside tmp_path, so a wrongful write would be seen
    zip_path = make_zip(tmp_path / "evil.zip", [("cats/ok.jpg", b"fine"), (evil, b"pwned")])
    dest = tmp_path / "out" / "raw"
    with pytest.raises(UserError) as err:
        safe_extract_zip(zip_path, dest)
    assert "evil.zip" in str(err.value) and evil in str(err.value)
    assert_nothing_written(tmp_path, zip_path, dest)


def test_rejects_symlink_entry(tmp_path):
    link = zipfile.ZipInfo("cats/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip(tmp_path / "links.zip", [("cats/ok.jpg", b"fine"), (link, "/etc/passwd")])
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"links\.zip.*cats/link\.jpg.*symlink"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_written(tmp_path, zip_path, dest)


def test_rejects_highly_compressed_entry(tmp_path):
    zip_path = make_zip(tmp_path / "bomb.zip", [("cats/bomb.jpg", bytes(4 << 20))])
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"bomb\.zip.*cats/bomb\.jpg.*zip bomb"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_written(tmp_path, zip_path, dest)


def test_rejects_archive_above_total_limit(tmp_path):
    entries = [("a.bin", os.urandom(6000)), ("b.bin", os.urandom(6000))]
    zip_path = make_zip(tmp_path / "big.zip", entries)
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"big\.zip.*12000 bytes.*10000"):
        safe_extract_zip(zip_path, dest, max_total_bytes=10_000)
    assert_nothing_written(tmp_path, zip_path, dest)
    assert safe_extract_zip(zip_path, dest, max_total_bytes=12_000) == 2


def test_header_that_understates_size_is_caught(tmp_path):
    zip_path = make_zip(tmp_path / "liar.zip", [("cats/liar.jpg", os.urandom(50_000))])
    data = bytearray(zip_path.read_bytes())
    # Declare 1,000 bytes in both the local and the central header: the checks up front pass.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature) + offset
        assert struct.unpack_from("<I", data, at)[0] == 50_000
        struct.pack_into("<I", data, at, 1000)
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"liar\.zip.*corrupt"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_written(tmp_path, zip_path, dest)


def test_corrupt_data_keeps_previous_dest(tmp_path):
    payload = b"catcatcat" * 100
    entries = [("a.txt", b"fine"), ("b.txt", payload)]
    zip_path = make_zip(tmp_path / "crc.zip", entries, zipfile.ZIP_STORED)
    data = bytearray(zip_path.read_bytes())
    data[data.index(payload) + 10] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "previous.txt").write_text("kept")
    with pytest.raises(UserError, match=r"crc\.zip.*corrupt"):
        safe_extract_zip(zip_path, dest)
    assert [p.name for p in dest.iterdir()] == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crc.zip", "raw"]


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_not_a_zip(tmp_path, content):
    zip_path = tmp_path / "bad.zip"
    if content == "garbage":
        zip_path.write_bytes(os.urandom(2000))
    else:
        make_zip(zip_path, [("a.txt", os.urandom(3000))])
        zip_path.write_bytes(zip_path.read_bytes()[:1500])
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"bad\.zip.*corrupt"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_written(tmp_path, zip_path, dest)


def test_missing_zip(tmp_path):
    with pytest.raises(UserError, match=r"nope\.zip.*not found"):
        safe_extract_zip(tmp_path / "nope.zip", tmp_path / "raw")


def test_duplicate_entries_rejected(tmp_path):
    with pytest.warns(UserWarning):
        zip_path = make_zip(tmp_path / "dup.zip", [("a.txt", b"first"), ("a.txt", b"second")])
    with pytest.raises(UserError, match=r"dup\.zip.*a\.txt.*twice"):
        safe_extract_zip(zip_path, tmp_path / "raw")


def test_a_name_flagged_utf8_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    """zipfile cannot even list such an archive; the user gets the file and a way out."""
    zip_path = tmp_path / "cats.zip"
    make_zip(zip_path, [("cafe.png", b"x")])
    data = bytearray(zip_path.read_bytes().replace(b"cafe.png", b"caf\xe9.png"))  # same length
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central header
        at = data.index(signature) + flags_at
        data[at:at + 2] = struct.pack("<H", struct.unpack("<H", data[at:at + 2])[0] | 0x800)
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "raw"
    with pytest.raises(UserError, match=r"cats.zip: an entry flagged as UTF-8 has a name that is not "
                                        r"UTF-8 \(b'caf\\xe9.png'\).*set data.path to the folder"):
        safe_extract_zip(zip_path, dest)
    assert_nothing_written(tmp_path, zip_path, dest)
