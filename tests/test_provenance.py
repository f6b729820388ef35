"""catgan/study/provenance.py: this project's commit where it is a checkout, the content hash of its code
everywhere, and no other repository's commit: the device machine gets a copy without .git, which
may lie inside someone else's checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catgan.study import provenance

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]


def copy_code(dest: Path) -> Path:
    """The code folders as the device machine gets them: files only, no caches, no .git."""
    for folder in provenance.CODE_DIRS:
        shutil.copytree(ROOT / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def commit_all(repo: Path) -> str:
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "x")
    return git(repo, "rev-parse", "HEAD")


def test_a_checkout_of_the_project_is_named_by_its_commit_and_clean_state(tmp_path):
    project = copy_code(tmp_path / "project")
    head = commit_all(project)
    code = provenance.code(project)
    assert (code["commit"], code["clean"], "note" in code) == (head, True, False)
    assert code["content_hash"] == provenance.content_hash(ROOT)  # the same files, the same hash
    assert provenance.code_line(code) == (f"commit {head[:12]} (clean tree), content hash "
                                          f"{code['content_hash'][:12]} of catgan/, stages/, "
                                          "benchmarks/")

    (project / "stages" / "train.py").write_text("# changed\n", encoding="utf-8")
    changed = provenance.code(project)
    assert (changed["commit"], changed["clean"]) == (head, False)
    assert changed["content_hash"] != code["content_hash"]
    assert "uncommitted changes" in provenance.code_line(changed)


def test_a_copy_inside_another_repository_is_named_by_its_hash_not_that_commit(tmp_path):
    outer = tmp_path / "outer"
    (outer / "notes").mkdir(parents=True)
    (outer / "notes" / "a.txt").write_text("another project\n", encoding="utf-8")
    other = commit_all(outer)
    copy = copy_code(outer / "project")
    code = provenance.code(copy)
    assert code["commit"] is None and code["clean"] is None
    assert code["content_hash"] == provenance.content_hash(ROOT)
    assert f"{outer} is another repository's checkout" in code["note"]
    assert other[:7] not in json.dumps(code)
    assert provenance.code_line(code).startswith("no git checkout: content hash ")


def test_without_git_at_all_the_hash_still_names_the_code(tmp_path, monkeypatch):
    copy = copy_code(tmp_path / "project")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code = provenance.code(copy)
    assert code["commit"] is None and code["note"].startswith(f"no git checkout of this project at {copy}")
    assert code["content_hash"] == provenance.content_hash(ROOT)


def test_caches_and_hidden_files_do_not_change_the_hash(tmp_path):
    copy = copy_code(tmp_path / "project")
    before = provenance.content_hash(copy)
    (copy / "catgan" / "__pycache__").mkdir(exist_ok=True)
    (copy / "catgan" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (copy / "benchmarks" / ".notes").write_text("scratch", encoding="utf-8")
    assert provenance.content_hash(copy) == before
    (copy / "benchmarks" / "new.py").write_text("", encoding="utf-8")  # a new file is new code
    assert provenance.content_hash(copy) != before


def test_the_record_holds_versions_device_command_and_wall_time():
    rec = provenance.record(["benchmarks/gpu_check.sh", "--cpu"], torch.device("cpu"), wall_s=12.34)
    assert rec["torch"] == torch.__version__ and rec["cuda"] == torch.version.cuda
    assert rec["device"].startswith("cpu: ") and rec["command"] == "benchmarks/gpu_check.sh --cpu"
    assert rec["wall_s"] == 12.3 and rec["date"].endswith("+00:00")
    assert provenance.line(rec).endswith(" | 12.3 s")


@pytest.mark.slow
def test_gpu_check_s_line_from_a_copy_inside_another_checkout(tmp_path):
    """`python -m catgan.study.provenance` in a copy of the code inside another checkout, as the device
    machine has it: the copy's content hash, never the enclosing repository's commit."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "README").write_text("another project\n", encoding="utf-8")
    other = commit_all(outer)
    copy = copy_code(outer / "project")
    proc = subprocess.run([sys.executable, "-m", "catgan.study.provenance", "--json",
                           str(tmp_path / "provenance.json"), "--command",
                           "benchmarks/gpu_check.sh"], cwd=copy, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(copy)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no git checkout: content hash ") and other[:7] not in proc.stdout
    rec = json.loads((tmp_path / "provenance.json").read_text(encoding="utf-8"))
    assert rec["code"]["content_hash"] == provenance.content_hash(ROOT)
    assert rec["command"] == "benchmarks/gpu_check.sh"
