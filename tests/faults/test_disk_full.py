"""A full disk while writing a checkpoint or the preprocessed array: one clear error that names the
path and says the disk is full, the previous good files intact, no temp file left.

The stage tests fill a real tmpfs, mounted in a private user namespace; the in-process tests make the
write itself fail with ENOSPC, and run where no such namespace may be made.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, merge, missing
from stagerun import in_tmpfs, make_project, tmpfs_works, tree_bytes

from catgan.errors import UserError
from catgan.fileio import atomic_dir, write_json
from catgan.training import checkpoint

# Fill the tmpfs up to the given number of free bytes.
FILL = 'fallocate -l $(( $(df --output=avail -B1 . | tail -n 1) - {free} )) filler\n'


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory) -> None:
    if not tmpfs_works(tmp_path_factory.mktemp("probe")):
        missing("no user namespace may mount a tmpfs here (the in-process disk-full tests still run)",
                "allow unprivileged user namespaces (`unshare --user --map-root-user --mount`)")


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_train_stage_on_a_full_disk_fails_clearly_and_keeps_its_last_checkpoint(tmpfs, tiny_data, tmp_path):
    src = make_project(tmp_path / "src", {"train": {"epochs": 1}}, data=tiny_data)
    (src / "epochs2.yaml").write_text(yaml.safe_dump(merge(TINY, {"train": {"epochs": 2}})))
    out, disk = tmp_path / "out", tmp_path / "disk"
    out.mkdir()
    # Epoch 1 trains and saves its checkpoint; then 2 MiB stay free: epoch 2's grid fits, its checkpoint not.
    script = f"""
cp -r "$SRC/." .
"$PY" "$STAGES/train.py" 2> "$OUT/first.log"
cp epochs2.yaml params.yaml
{FILL.format(free=2 << 20)}
set +e; "$PY" "$STAGES/train.py" 2> "$OUT/full.log"; echo $? > "$OUT/rc"; set -e
find . -name '*.tmp' > "$OUT/temps"
cp -r checkpoints metrics "$OUT/"
"""
    done = in_tmpfs(disk, 128, script, {"SRC": str(src), "OUT": str(out)})
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "full.log").read_text()
    assert (out / "rc").read_text().strip() == "2", log[-3000:]
    last = next((out / "checkpoints").glob("*/last.pt"))
    assert f"error: {disk}/checkpoints/{last.parent.name}/last.pt: the disk is full" in log
    assert "Traceback" not in log
    assert checkpoint.load(last)["epoch"] == 1
    assert sorted(p.name for p in last.parent.iterdir() if p.is_file()) == ["last.pt"]
    assert (out / "temps").read_text() == ""
    assert json.loads((out / "metrics/train.json").read_text())["epoch"] == 1  # the first run's, intact


def test_preprocess_stage_on_a_full_disk_fails_clearly_and_keeps_the_old_array(tmpfs, tiny_data, tmp_path):
    src = make_project(tmp_path / "src", {})
    shutil.copytree(tiny_data / "data/raw", src / "data/raw")
    out, disk = tmp_path / "out", tmp_path / "disk"
    out.mkdir()
    script = f"""
cp -r "$SRC/." .
"$PY" "$STAGES/preprocess.py" > /dev/null 2>&1
cp -r data/prepared "$OUT/before"
{FILL.format(free=64 << 10)}
set +e; "$PY" "$STAGES/preprocess.py" 2> "$OUT/full.log"; echo $? > "$OUT/rc"; set -e
find . -name '*.tmp' > "$OUT/temps"
cp -r data/prepared "$OUT/after"
"""
    done = in_tmpfs(disk, 16, script, {"SRC": str(src), "OUT": str(out)})
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "full.log").read_text()
    assert (out / "rc").read_text().strip() == "2", log[-3000:]
    assert "error: data/prepared: the disk is full" in log and "Traceback" not in log
    assert tree_bytes(out / "after") == tree_bytes(out / "before") != {}
    assert (out / "temps").read_text() == ""


class FillingFile:
    """A real file on a disk with ``room`` bytes left: the write past that fails with ENOSPC."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.fh.write(bytes(data[:self.room]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def test_checkpoint_save_on_a_full_disk_raises_a_clear_error_and_keeps_last_and_prev(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    for epoch in (1, 2):
        checkpoint.save(path, {"epoch": epoch, "w": torch.ones(5000) * epoch})
    before = tree_bytes(tmp_path)
    monkeypatch.setattr(checkpoint, "open", lambda p, mode: FillingFile(open(p, mode), 4096), raising=False)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: the disk is full \(No space left"):
        checkpoint.save(path, {"epoch": 3, "w": torch.ones(5000) * 3})
    assert tree_bytes(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "prev.pt"]
    assert checkpoint.load(path)["epoch"] == 2


def test_atomic_writes_on_a_full_disk_name_the_target_and_leave_the_old_one(tmp_path, monkeypatch):
    target, folder = tmp_path / "metrics.json", tmp_path / "prepared"
    write_json(target, {"old": 1})
    folder.mkdir()
    (folder / "images.npy").write_bytes(b"old array")
    before = tree_bytes(tmp_path)

    def full(self, data):
        with open(self, "wb") as fh:
            fh.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UserError, match=rf"^{re.escape(str(target))}: the disk is full"):
        write_json(target, {"new": list(range(100))})
    with pytest.raises(UserError, match=rf"^{re.escape(str(folder))}: the disk is full"):
        with atomic_dir(folder) as tmp:
            (tmp / "images.npy").write_bytes(b"new array, much longer than the old")
    monkeypatch.undo()
    assert tree_bytes(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "prepared"]
