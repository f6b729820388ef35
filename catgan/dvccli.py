"""The ``dvc`` command line, as the project's commands call it."""
from __future__ import annotations

import shutil
import subprocess
import sys
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
    """Run ``dvc args``; a failure is one UserError line with DVC's last message."""
    cmd = [dvc_executable(), *args]
    proc = subprocess.run(cmd, text=True, capture_output=capture)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise UserError(f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode})"
                        + (f": {detail[0]}" if detail else "; see the output above"))
    return proc.stdout or ""
