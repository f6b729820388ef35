"""The real stage scripts in subprocesses, for the fault tests: start, kill -9, run side by side, inspect."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from conftest import ROOT, TINY, merge, write_params
from test_stages import stage_env

from catgan.training import checkpoint

TIMEOUT = 300  # seconds: only a hang gets near it


def make_project(dest: Path, overrides: dict, *, data: Path | None = None,
                 store: Path | None = None) -> Path:
    """A project folder with TINY params plus ``overrides``, a copy of ``data``'s data/ folder and
    of the MLflow SQLite file ``store`` (an initialised one saves every project the migrations)."""
    dest.mkdir(parents=True, exist_ok=True)
    write_params(dest, merge(TINY, overrides))
    if data is not None:
        shutil.copytree(data / "data", dest / "data")
    if store is not None:
        shutil.copy2(store, dest / "mlflow.db")
    return dest


def prepared(dest: Path) -> Path:
    """A project holding tiny fetched and preprocessed data, for make_project(..., data=)."""
    project = make_project(dest, {})
    ok(run(project, "fetch"))
    ok(run(project, "preprocess"))
    return project


def empty_store(folder: Path) -> Path:
    """A SQLite MLflow store with its tables made and no experiment of ours."""
    from mlflow.tracking import MlflowClient

    path = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def start(project: Path, stage: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """The stage script running in ``project``, its stderr going to the file ``log``. Its temp
    folders go beside ``project``: one a kill -9 interrupts is never removed."""
    scratch = project.parent / f"{project.name}-tmp"
    scratch.mkdir(exist_ok=True)
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project,
                                env={**stage_env(project), "TMPDIR": str(scratch), **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=err)


def run(project: Path, stage: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The stage run to its end; the caller checks the exit code."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project,
                          env={**stage_env(project), **(env or {})}, capture_output=True, text=True,
                          timeout=TIMEOUT)


def run_side_by_side(jobs: list[tuple[Path, str]]) -> list[subprocess.CompletedProcess]:
    """Several (project, stage) runs at once: the machine's cores work in parallel."""
    procs = [subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project,
                              env=stage_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for project, stage in jobs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    """Poll ``condition`` until it holds (True) or ``proc`` has exited (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"{proc.args} neither got there nor exited in {timeout} s")


def kill9(proc: subprocess.Popen) -> int:
    """SIGKILL, as a power cut or the OOM killer would; the exit code (-9 unless it had ended)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait()


def temp_leftovers(folder: Path) -> list[Path]:
    """Files and folders named like catgan.fileio temps under ``folder``."""
    return sorted(p for p in folder.rglob("*.tmp")) if folder.exists() else []


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (hidden temps left out)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def same_state_dicts(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def checkpoint_files(project: Path) -> list[Path]:
    return sorted(project.glob("checkpoints/*/*.pt"))


def assert_intact_checkpoints(project: Path) -> None:
    """Every last.pt / prev.pt present passes its checksum: no half-written checkpoint is visible."""
    for path in checkpoint_files(project):
        checkpoint.unseal(path.read_bytes())


def tmpfs_works(folder: Path) -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (for a real full disk)."""
    probe = folder / "probe"
    probe.mkdir(exist_ok=True)
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               'mount -t tmpfs -o size=1m tmpfs "$0"', str(probe)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def in_tmpfs(mount: Path, size_mib: int, script: str, env: dict) -> subprocess.CompletedProcess:
    """Run the shell ``script`` in ``mount``, there a fresh tmpfs of ``size_mib`` MiB: a real disk that
    fills up. The tmpfs lives in a private mount namespace and is gone when the script ends, so the
    script copies out what the test checks; $PY and $STAGES name Python and the stage scripts."""
    mount.mkdir(parents=True, exist_ok=True)
    setup = f'set -e; mount -t tmpfs -o size={size_mib}m tmpfs "{mount}"; cd "{mount}"\n'
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", setup + script],
                          env={**stage_env(mount), **env, "PY": sys.executable,
                               "STAGES": str(ROOT / "stages")},
                          capture_output=True, text=True, timeout=TIMEOUT)
