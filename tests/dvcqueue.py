"""Run a project's queued DVC experiments with `dvc queue start -j N` and wait for them, as a
user would: by `dvc queue status`, not by the workers' lifetime.

`dvc queue start` forks its workers with our stdout and stderr: captured through pipes, the call
would last until the last worker exits, and a worker that never shuts down (it idles, then asks
celery to stop it) would hang the test with nothing to show. Its output goes to a file instead,
the wait has a deadline, a failure shows each experiment's log and each worker's, and the workers
this call started are stopped by their process ids. The queue is read as `catgan study` reads it
(catgan/study/queue.py), through DVC's transient read errors.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from catgan.study import queue

POLL_S = 10  # each look takes DVC's locks, which concurrent workers need (dvc#8763)


def run_queue(project: Path, env: dict, jobs: int = 2, deadline_s: int = 300) -> str:
    """Start ``jobs`` workers on ``project``'s queue, wait until none of its experiments is
    queued or running, and return the last `dvc queue status`. Fails, with the logs, when an
    experiment failed or the deadline passed."""
    def dvc(*args: str) -> str:
        return queue.read(*args, cwd=project, env=env)

    started, ok = project / ".dvc" / "tmp" / "dvc-queue-start.log", False
    try:
        names = list(queue.status(project, env))
        with started.open("w") as log:
            subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=project, env=env,
                           stdout=log, stderr=subprocess.STDOUT, timeout=120, check=True)
        states = queue.wait(names, poll_s=POLL_S, deadline=time.time() + deadline_s, cwd=project,
                            env=env)
        status = dvc("queue", "status")
        unended = [n for n in names if states.get(n, "Queued") in queue.ACTIVE]
        failed = [n for n in names if states.get(n) in ("Failed", queue.GONE)]
        assert not unended and not failed, (
            f"dvc queue after {deadline_s} s at most: {states}\n{status}"
            + "".join(f"\n--- dvc queue logs {name}:\n{dvc('queue', 'logs', name)[-3000:]}"
                      for name in failed if states[name] == "Failed")
            + worker_logs(project))
        ok = True
        return status
    finally:
        stop_workers(project, grace_s=120 if ok else 0)


def worker_logs(project: Path) -> str:
    return "".join(f"\n--- {out.name} (end):\n{out.read_text(errors='replace')[-2000:]}"
                   for out in sorted(celery_folder(project).glob("dvc-exp-worker-*.out")))


def celery_folder(project: Path) -> Path:
    return project / ".dvc" / "tmp" / "exps" / "celery"


def stop_workers(project: Path, grace_s: int = 120) -> None:
    """Wait ``grace_s`` for ``project``'s workers to exit, as they do once the queue stays empty
    (after cleaning up their experiments' temp folders), then SIGKILL those still alive, with
    their process groups: each worker's launcher made one for it and its experiment."""
    end = time.time() + grace_s
    while (alive := live_workers(project)) and time.time() < end:
        time.sleep(2)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):  # it exited after the look
            os.killpg(os.getpgid(pid), signal.SIGKILL)


def live_workers(project: Path) -> list[int]:
    pids = [json.loads(info.read_text())["pid"]
            for info in celery_folder(project).glob("dvc-exp-worker-*.json")]
    return [pid for pid in pids if _ours(pid, project)]


def _ours(pid: int, project: Path) -> bool:
    """Whether ``pid`` is alive and is a queue worker in ``project`` (not a reused id)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"queue-worker" in cmdline and \
            Path(os.readlink(f"/proc/{pid}/cwd")).resolve() == project.resolve()
    except OSError:
        return False
