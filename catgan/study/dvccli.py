"""The ``dvc`` command line, as the project's commands call it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from catgan.errors import UserError


class DvcFailed(UserError):
    """A dvc command that exited non-zero: one line with the command and DVC's last message."""

    def __init__(self, args: list[str], code: int, message: str):
        self.message = message
        super().__init__(f"`dvc {' '.join(args)}` failed (exit {code})"
                         + (f": {message}" if message else "; see the output above"))


class DvcStopped(UserError):
    """A SIGTERM or SIGHUP came while a dvc command ran; DVC got it as a Ctrl-C, which it
    recovers from, and has exited."""

    def __init__(self, args: list[str], signum: int):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; `dvc {' '.join(args)}` was "
                         "interrupted as by Ctrl-C first, so it undid any half-done change")


# DVC stashes the workspace, detaches HEAD and writes the -S overrides into params.yaml while it
# queues an experiment, and undoes all three on Ctrl-C only: a SIGTERM or SIGHUP straight to it
# (a closed terminal, a session's end) leaves the user's checkout detached with the overrides
# staged. So it runs in its own session, and every stop we receive reaches it as SIGINT. A
# SIGKILL cannot be passed on: DVC, out of its reach, finishes what it was doing.
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_shielded(args: list[str], cmd: list[str], **popen) -> int:
    """``cmd``'s exit code. A stop signal meanwhile is passed on as SIGINT to its whole group;
    once it has exited, a SIGTERM or SIGHUP raises DvcStopped and a Ctrl-C KeyboardInterrupt.
    Off the main thread no handler can be installed, so the command runs as a plain child."""
    if threading.current_thread() is not threading.main_thread():
        return subprocess.run(cmd, **popen).returncode
    received: list[int] = []
    child: list[subprocess.Popen] = []

    def forward(signum, _frame):
        received.append(signum)
        if child:
            try:
                os.killpg(child[0].pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    # A signal ignored here (SIGINT in a shell's background job) stays ignored.
    before = {s: signal.signal(s, forward) for s in STOPS if signal.getsignal(s) != signal.SIG_IGN}
    try:
        child.append(subprocess.Popen(cmd, start_new_session=True, **popen))
        if received:
            forward(received[0], None)
        code = child[0].wait()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    stops = [s for s in received if s != signal.SIGINT]
    if stops:
        raise DvcStopped(args, stops[0])
    if received:  # Ctrl-C, once or more: as if it came outside the call, for callers that catch it
        raise KeyboardInterrupt
    return code


def dvc_executable() -> str:
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise UserError("the dvc command was not found beside Python or on PATH; "
                        "install the project (pip install -e .) or activate its virtualenv")
    return found


def dvc(*args: str, capture: bool = False, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run ``dvc args`` in ``cwd``; a failure raises DvcFailed with DVC's last message.

    Captured output goes through files, not pipes: ``dvc queue start`` leaves a worker behind
    that would hold a pipe open, and waiting for the pipe would mean waiting for the whole queue.
    """
    cmd = [dvc_executable(), *args]
    if capture:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = run_shielded(list(args), cmd, stdout=out, stderr=err, cwd=cwd, env=env)
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
    else:
        proc = subprocess.CompletedProcess(cmd, run_shielded(list(args), cmd, cwd=cwd, env=env))
    if proc.returncode != 0:
        raise DvcFailed(list(args), proc.returncode, last_error(proc.stderr or ""))
    return proc.stdout or ""


def last_error(stderr: str) -> str:
    """DVC's message in its stderr: the last ``ERROR:`` line, else the last line. An unexpected
    error ends with a footer ("Having any troubles? Hit us up at ...") after its ERROR line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    return (errors or lines or [""])[-1]
