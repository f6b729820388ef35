"""The ``dvc`` command line, as the project's commands call it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from catgan.errors import UserError


class DvcFailed(UserError):
    """A dvc command that exited non-zero: one line with the command and DVC's last message."""

    def __init__(self, args: list[str], code: int, message: str):
        self.message = message
        super().__init__(f"`dvc {' '.join(args)}` failed (exit {code})"
                         + (f": {message}" if message else "; see the output above"))


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
            code = subprocess.run(cmd, stdout=out, stderr=err, cwd=cwd, env=env).returncode
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
    else:
        proc = subprocess.run(cmd, text=True, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise DvcFailed(list(args), proc.returncode, last_error(proc.stderr or ""))
    return proc.stdout or ""


def last_error(stderr: str) -> str:
    """DVC's message in its stderr: the last ``ERROR:`` line, else the last line. An unexpected
    error ends with a footer ("Having any troubles? Hit us up at ...") after its ERROR line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    return (errors or lines or [""])[-1]
