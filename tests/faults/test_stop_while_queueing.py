"""A project command told to stop while DVC queues an experiment (catgan/study/dvccli.py): the
user's checkout must come back as it was. DVC detaches HEAD, stashes the workspace and writes
the -S override into params.yaml for a moment, and undoes it all on Ctrl-C only; the stop here
lands inside that moment, seen by HEAD turning detached. Then the same passing-on, signal by
signal, with a child that needs more than one Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from catgan.study.dvccli import DvcStopped, run_shielded
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


# A child that takes Ctrl-C as DVC does mid-run: it exits only at the Nth SIGINT it gets. It
# touches the file named by its argument once it listens.
CHILD = ("import pathlib, signal, sys, time\n"
         "got = []\n"
         "signal.signal(signal.SIGINT, lambda *_: got.append(1) or len(got) == {n} and sys.exit(1))\n"
         "pathlib.Path(sys.argv[1]).touch()\n"
         "time.sleep(60)\n")


@pytest.fixture
def not_ignoring_stops():
    """This process as a terminal's command: under `nohup` or `make test &` a stop signal would be
    ignored, and run_shielded keeps an ignored signal ignored."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("not_ignoring_stops")
@pytest.mark.parametrize("signals, raised", [
    ([signal.SIGINT], KeyboardInterrupt),
    ([signal.SIGINT, signal.SIGINT], KeyboardInterrupt),
    ([signal.SIGINT, signal.SIGTERM], DvcStopped),
    ([signal.SIGHUP, signal.SIGINT], DvcStopped),
], ids=["ctrl-c", "ctrl-c-twice", "ctrl-c-then-sigterm", "sighup-then-ctrl-c"])
def test_each_stop_reaches_the_child_as_ctrl_c_and_the_first_non_ctrl_c_names_the_exit(signals,
                                                                                       raised,
                                                                                       tmp_path):
    listening = tmp_path / "listening"

    def send():
        # A signal before the child listens, or after the call returned, would hit pytest itself.
        end = time.time() + 60
        while not listening.exists() and time.time() < end:
            time.sleep(0.01)
        for signum in signals:
            os.kill(os.getpid(), signum)
            time.sleep(0.2)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(raised) as caught:
            run_shielded(["child"], [sys.executable, "-c", CHILD.format(n=len(signals)),
                                     str(listening)])
    finally:
        sender.join()
    if raised is DvcStopped:
        stop = next(s for s in signals if s != signal.SIGINT)
        assert caught.value.exit_code == 128 + stop and stop.name in str(caught.value)
