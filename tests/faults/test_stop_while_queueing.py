"""A project command told to stop while DVC queues an experiment (catgan/study/dvccli.py): the
user's checkout must come back as it was. DVC detaches HEAD, stashes the workspace and writes
the -S override into params.yaml for a moment, and undoes it all on Ctrl-C only; the stop here
lands inside that moment, seen by HEAD turning detached."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import env, sh

PARAMS = "train:\n  lr: 0.1\n"
EDIT = "a change the user has not committed\n"
QUEUE = ("from catgan.errors import cli_entry\n"
         "from catgan.study.dvccli import dvc\n"
         "cli_entry(lambda: dvc('exp', 'run', '--queue', '-S', 'train.lr=0.5'))()\n")


@pytest.fixture
def project(tmp_path) -> Path:
    """A git and DVC repository with one stage on a param, and an uncommitted edit."""
    root = tmp_path / "project"
    root.mkdir()
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "dvc", "init", "-q")
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo hi\n    params: [train.lr]\n")
    (root / "notes.txt").write_text("committed\n")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "init")
    (root / "notes.txt").write_text(EDIT)
    return root


def processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            pass
    return found


def as_in_a_terminal() -> None:
    """A shell's background job (`make test &`) ignores SIGINT, and `nohup` SIGHUP; a command
    typed in a terminal ignores neither, and an ignored signal is kept ignored (by design)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_stop_while_dvc_queues_an_experiment_leaves_the_checkout_as_it_was(project, signum):
    head = project / ".git" / "HEAD"
    proc = subprocess.Popen([sys.executable, "-c", QUEUE], cwd=project, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=as_in_a_terminal)
    end = time.time() + 120
    while head.read_text().startswith("ref:") and proc.poll() is None and time.time() < end:
        time.sleep(0.001)
    assert proc.poll() is None, f"dvc ended before HEAD was seen detached:\n{proc.stderr.read()}"
    # The whole group, as a closing terminal or a session's end signals it.
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    end = time.time() + 120
    while processes_in(project) and time.time() < end:
        time.sleep(0.2)
    assert not processes_in(project), "a dvc process outlived the stop by 2 minutes"

    assert head.read_text() == "ref: refs/heads/main\n"
    assert (project / "params.yaml").read_text() == PARAMS
    assert (project / "notes.txt").read_text() == EDIT
    assert sh(project, "git", "status", "--porcelain") == " M notes.txt\n"
    assert sh(project, "git", "stash", "list") == ""
    if signum == signal.SIGKILL:
        assert proc.returncode == -signum
    elif signum == signal.SIGINT:
        assert (proc.returncode, err.strip().splitlines()[-1]) == (130, "error: interrupted")
    else:
        assert proc.returncode == 128 + signum
        assert err.strip().splitlines()[-1] == (
            f"error: stopped by {signum.name}; `dvc exp run --queue -S train.lr=0.5` was "
            "interrupted as by Ctrl-C first, so it undid any half-done change")
