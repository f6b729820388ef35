"""The real fetch and preprocess stages on a corpus of broken, hostile and odd image files.

Every kind must be used with the right pixels, skipped under the right manifest reason, or refused
with one clear line; the stages must never crash with a traceback and never hang (a timeout fails).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badimages import Corpus, display, write_bad_corpus
from conftest import ROOT, TINY, merge, missing, write_params
from PIL import Image

from catgan.data.names import portable

TIMEOUT = 120  # seconds: far above a normal run, so only a hang reaches it


def run_stage(project: Path, name: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return subprocess.run([*prefix, sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=project,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**env, "DVC_ROOT": str(project)})


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def project_with(tmp: Path, data: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    write_params(tmp, merge(TINY, {"data": data}))
    return tmp


def expected_skips(corpus: Corpus, leave_out: tuple[str, ...] = ()) -> dict[str, list[str]]:
    out = {reason: sorted(display(p) for p in paths if p not in leave_out)
           for reason, paths in corpus.skipped.items()}
    return {reason: paths for reason, paths in out.items() if paths}


def sorted_skips(manifest: dict) -> dict[str, list[str]]:
    return {reason: sorted(paths) for reason, paths in manifest["skipped"].items()}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """The preprocess stage (2 workers) on the corpus, allowed to skip any number of files."""
    project = project_with(tmp_path_factory.mktemp("corpus"), {"max_bad_fraction": 1.0, "workers": 2})
    corpus = write_bad_corpus(project / "data" / "raw")
    proc = run_stage(project, "preprocess")
    return project, corpus, proc


def test_every_kind_is_used_or_skipped_under_its_reason(corpus_run):
    project, corpus, proc = corpus_run
    assert_ok(proc)
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert sorted_skips(manifest) == expected_skips(corpus)
    assert manifest["duplicates_removed"] == corpus.duplicates
    assert manifest["ignored"] == sorted(corpus.ignored)
    used, found = len(corpus.used), len(corpus.used) + len(corpus.duplicates)
    found += sum(len(paths) for paths in corpus.skipped.values())
    assert (manifest["files_used"], manifest["files_found"]) == (used, found)
    assert f"{found} files found, {used} images used" in proc.stdout


def test_used_images_show_the_right_pixels(corpus_run):
    """Transparency, 16-bit, CMYK, EXIF rotation, first GIF frame, centre crop: probed per kind."""
    project, corpus, proc = corpus_run
    assert_ok(proc)
    images = np.load(project / "data/prepared/images.npy")
    # Rows follow the byte order of the kept paths.
    kept = sorted(corpus.used, key=os.fsencode)
    assert images.shape == (len(kept), 3, 64, 64)
    wrong = []
    for row, rel in zip(images, kept, strict=True):
        for probe in corpus.used[rel]:
            got = row[:, probe.y, probe.x].astype(int)
            if np.abs(got - probe.rgb).max() > probe.tol:
                wrong.append(f"{display(rel)} at ({probe.y}, {probe.x}): {got.tolist()} != {probe.rgb}")
    assert not wrong, "\n".join(wrong)


def test_too_many_bad_files_is_one_clear_line_and_no_output(corpus_run, tmp_path):
    raw = corpus_run[0] / "data" / "raw"
    project = project_with(tmp_path, {"max_bad_fraction": 0.05, "workers": 1})
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(raw)
    proc = run_stage(project, "preprocess")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0])
    assert "data/raw" in lines[0] and "data.max_bad_fraction" in lines[0]
    # The file named with a line break is shown escaped, so the error stays on one line.
    assert "new\\nline.jpg" in lines[0]
    assert sorted(os.listdir(project / "data")) == ["raw"]


def test_fetch_folder_copies_files_and_leaves_special_entries_behind(tmp_path):
    """fetch (data.source: folder) must not block on the FIFO or /dev/zero, nor loop on links."""
    source = tmp_path / "downloads"
    corpus = write_bad_corpus(source)
    project = project_with(tmp_path / "project", {"source": "folder", "path": str(source),
                                                  "max_bad_fraction": 1.0, "workers": 1})
    fetched = run_stage(project, "fetch")
    assert_ok(fetched)
    raw = project / "data" / "raw"
    copied = sorted(os.fsencode(p.relative_to(raw)) for p in raw.rglob("*") if not p.is_dir())
    regular = [p for p in source.rglob("*") if p.is_file() and "sub/up" not in p.as_posix()]
    # Written under portable names (catgan.data.names), beside the fetch record.
    portable_names = [os.fsencode("/".join(portable(os.fsencode(part)) for part in
                                           p.relative_to(source).parts)) for p in regular]
    assert copied == sorted([b".catgan-fetch.json", *portable_names])
    assert not any(p.is_symlink() for p in raw.rglob("*"))
    for rel in corpus.special:
        assert f"skipping {source / rel} (broken link or special file)" in fetched.stderr

    prepared = run_stage(project, "preprocess")
    assert_ok(prepared)
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert sorted_skips(manifest) == expected_skips(corpus, leave_out=tuple(corpus.special))
    assert manifest["files_used"] == len(corpus.used)


def test_fetch_refuses_a_fifo_as_data_path(tmp_path):
    fifo = tmp_path / "cats.zip"
    os.mkfifo(fifo)
    project = project_with(tmp_path / "project", {"source": "folder", "path": str(fifo)})
    proc = run_stage(project, "fetch")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: data.path: {fifo} is neither a folder nor a file (a FIFO "
                                   "or a device?); give a folder of images or a .zip of them")
    assert not (project / "data").exists()


def unprivileged(tmp_path: Path) -> tuple[str, ...]:
    """A command prefix under which chmod 000 stops reads: as root, without the capabilities
    that override file permissions. Skips the test where that cannot be arranged."""
    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
    readable, locked = tmp_path / "readable", tmp_path / "locked"
    readable.write_text("x")
    locked.write_text("x")
    locked.chmod(0)
    try:
        works = [subprocess.run([*prefix, "cat", str(path)], capture_output=True, timeout=30).returncode
                 for path in (readable, locked)]
    except OSError:  # no setpriv
        works = None
    if works is None or works[0] != 0 or works[1] == 0:
        missing("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: chmod 000 does "
                "not stop root reading a file", "install setpriv (util-linux) or run the tests as a non-root user")
    return prefix


def test_entries_without_read_permission_are_skipped(tmp_path):
    prefix = unprivileged(tmp_path)
    source = tmp_path / "downloads"
    (source / "locked_dir").mkdir(parents=True)
    Image.new("RGB", (40, 40), (1, 2, 3)).save(source / "ok.png")
    Image.new("RGB", (40, 40), (4, 5, 6)).save(source / "locked.png")
    Image.new("RGB", (40, 40), (7, 8, 9)).save(source / "locked_dir" / "inside.png")
    (source / "locked.png").chmod(0)
    (source / "locked_dir").chmod(0)
    try:
        fetch_project = project_with(tmp_path / "fetch", {"source": "folder", "path": str(source)})
        fetched = run_stage(fetch_project, "fetch", prefix)
        assert_ok(fetched)
        assert sorted(os.listdir(fetch_project / "data" / "raw")) == [".catgan-fetch.json", "ok.png"]
        assert f"skipping {source / 'locked.png'} (not readable)" in fetched.stderr
        assert f"skipping {source / 'locked_dir'} (Permission denied)" in fetched.stderr

        project = project_with(tmp_path / "prep", {"max_bad_fraction": 1.0, "workers": 1})
        (project / "data").mkdir()
        (project / "data" / "raw").symlink_to(source)
        assert_ok(run_stage(project, "preprocess", prefix))
        manifest = json.loads((project / "data/prepared/manifest.json").read_text())
        assert sorted_skips(manifest) == {"unreadable": ["locked.png", "locked_dir/"]}
        assert manifest["files_used"] == 1
    finally:
        (source / "locked.png").chmod(0o644)
        (source / "locked_dir").chmod(0o755)
