"""The ``dvc`` command line, as the project's commands call it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from catgan.errors import UserError


def dvc_executable() -> str:
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise UserError("the dvc command was not found beside Python or on PATH; "
                        "install the project (pip install -e .) or activate its virtualenv")
    return found


def dvc(*args: str, capture: bool = False) -> str:
    """Run ``dvc args``; a failure is one UserError line with DVC's last message.

    Captured output goes through files, not pipes: ``dvc queue start`` leaves a worker behind
    that would hold a pipe open, and waiting for the pipe would mean waiting for the whole queue.
    """
    cmd = [dvc_executable(), *args]
    if capture:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = subprocess.run(cmd, stdout=out, stderr=err).returncode
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
    else:
        proc = subprocess.run(cmd, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-1:]  # stderr: None if not captured
        raise UserError(f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode})"
                        + (f": {detail[0]}" if detail else "; see the output above"))
    return proc.stdout or ""
