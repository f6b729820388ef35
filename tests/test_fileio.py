"""Atomic writes give files and folders the mode a plain open() or mkdir gives them under the
umask: a teammate or a web server sharing the folder can read the outputs; secrets stay 0600."""
from __future__ import annotations

import os
import stat

import pytest

from catgan.fileio import atomic_dir, atomic_path, write_text
from catgan.study.compare.render import save
from catgan.study.compare.runs import Record
from catgan.study.compare.stats import summarize


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_mode_plain_open_gives(umask, tmp_path):
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    (tmp_path / "plain").mkdir()
    expected_file, expected_dir = mode(tmp_path / "plain.txt"), mode(tmp_path / "plain")
    assert (expected_file, expected_dir) == (0o666 & ~umask, 0o777 & ~umask)

    write_text(tmp_path / "new" / "a.json", "{}")
    write_text(tmp_path / "new" / "a.json", "{} ")  # replacing an existing file
    with atomic_path(tmp_path / "grid.png", suffix=".png") as tmp:
        tmp.write_bytes(b"png")
    with atomic_dir(tmp_path / "samples") as tmp:
        (tmp / "epoch_001.png").write_bytes(b"png")
    records = [Record(f"{v}-{seed}", v, seed, {"eval.swd.swd_avg": 40.0 - 9 * (v == "fused") + seed})
               for v in ("baseline", "fused") for seed in (0, 1)]
    written = save(summarize(records), tmp_path / "compare")  # catgan compare's three files
    files = [tmp_path / "new" / "a.json", tmp_path / "grid.png", *written]
    assert {f.name: mode(f) for f in files} == {f.name: expected_file for f in files}
    folders = [tmp_path / "new", tmp_path / "samples", tmp_path / "compare"]
    assert {d.name: mode(d) for d in folders} == {d.name: expected_dir for d in folders}
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_secret_is_written_0600_whatever_the_umask(umask, tmp_path):
    write_text(tmp_path / "pgpass", "127.0.0.1:*:*:catgan:pw\n", mode=0o600)
    assert mode(tmp_path / "pgpass") == 0o600
