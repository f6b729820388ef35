"""One array task of ``catgan study --slurm``: its run as a DVC experiment in a fresh clone of the
checkout, pushed back into the checkout.

``python -m catgan.study.slurmtask submit-<k>.json`` (catgan/study/slurm.py writes the plan and the
job script), run ``SLURM_ARRAY_TASK_ID``: the task names itself after the run (squeue, sacct),
clones the submitted commit into ``work/<run>``, points the clone's DVC cache at the checkout's
and its ``checkpoints/`` at the checkout's, runs ``dvc exp run --name <run> -S ...`` there, then
``dvc exp push`` sends the experiment's git ref to the checkout, whose cache already holds its
outputs. Every attempt starts from a fresh clone: a task requeued after preemption, or submitted
again, resumes training from the last complete epoch's checkpoint, which every node sees.

Why not DVC's queue or temp experiments in the checkout itself: DVC decides whether an experiment
still runs by its process id on this machine, and guards its workspace with lock files, neither of
which holds across machines. Git refs and a cache that several repositories share are what DVC
supports between machines (docs/study.md: A study on a SLURM cluster).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from catgan.errors import cli_entry
from catgan.study.dvccli import dvc
from catgan.study.slurm import git

log = logging.getLogger(__name__)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    plan = json.loads(Path((sys.argv[1:] if argv is None else argv)[0]).read_text())
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    run = plan["runs"][index]
    name, project = run["name"], Path(plan["project"])
    task = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{index}"
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1
    rename(task, name)
    print(f"study {plan['study']}: {name}, task {task}, attempt {attempt}, on "
          f"{socket.gethostname()}", flush=True)
    work = Path(plan["work"]) / name
    clone(project, plan["commit"], Path(plan["cache"]), work)
    # The stages run `python -m stages.<name>` and `dvc` from PATH: this environment's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    settings = [a for key, value in run["overrides"].items() for a in ("-S", f"{key}={value}")]
    dvc("exp", "run", "--name", name, *settings, cwd=work, env=env)
    dvc("exp", "push", "--force", "--no-cache", "origin", name, cwd=work, env=env)
    shutil.rmtree(work)
    print(f"study {plan['study']}: {name} is an experiment of {project} (dvc exp show), after "
          f"{time.monotonic() - started:.0f} s in this task", flush=True)


def rename(task: str, name: str) -> None:
    """Name the array task after its run, so that squeue and sacct say study, arm and seed. By
    ``<array job>_<index>``, not SLURM_JOB_ID: the last task's job id is the array's, and renaming
    that renames every task."""
    proc = subprocess.run(["scontrol", "update", f"JobId={task}", f"JobName={name}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("could not name SLURM task %s %s (%s); it keeps the array's name", task, name,
                    proc.stderr.strip())


def clone(project: Path, commit: str, cache: Path, work: Path) -> None:
    """``work``: a clone of ``project`` at ``commit`` whose DVC cache and checkpoints are
    ``project``'s. What an earlier attempt left there is removed first."""
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    git(work.parent, "clone", "--quiet", "--no-checkout", str(project), str(work))
    git(work, "checkout", "--quiet", commit)
    # Hard links: the clone's data and outputs cost no copy, and DVC keeps them read-only. DVC's
    # per-repository state goes inside the clone, not to /var/tmp.
    (work / ".dvc" / "config.local").write_text(
        f"[cache]\n    dir = {cache}\n    type = \"reflink,hardlink,copy\"\n"
        f"[core]\n    site_cache_dir = {work / '.dvc' / 'tmp' / 'site'}\n")
    checkpoints = project / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    (work / "checkpoints").symlink_to(checkpoints)
    with (work / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/checkpoints\n")  # .gitignore's /checkpoints/ matches folders, not a link


if __name__ == "__main__":
    main()
