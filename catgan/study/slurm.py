"""``catgan study --slurm``: a study's runs as one SLURM job array, and a job after it for the page.

On the login node this command refuses in one line what the nodes could not run (no sbatch on
PATH, changes not committed, a tracking store on this machine's disk, sbatch options SLURM refuses;
a server that refuses the credentials stops it when the study's MLflow run is made), then submits
one array task per run that has not finished (catgan/study/slurmtask.py runs it as a DVC
experiment in a clone of this checkout), one GPU each by default, and a job that runs
``catgan study --page-only`` here once every task has ended. The same command again submits only
the runs that neither finished (in the tracking store and as an experiment here) nor wait or run
in SLURM.

Its files sit in ``<study folder>/slurm/`` (``studies/<name>/slurm`` by default): ``submit-<k>.json``
(submission k: the commit, the runs by array index, the job ids), the scripts ``submit-<k>.sh`` and
``page-<k>.sh``, ``logs/<array job>_<index>.out`` per task and ``logs/page-<job>.out``, and
``work/<run>/``, the clone a task runs in, removed once its experiment is pushed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from catgan.config import TrackingConfig
from catgan.errors import UserError
from catgan.fileio import atomic_path
from catgan.study.dvccli import dvc
from catgan.tracking.store import redact, tracking_uri

EXP_REFS = "refs/exps/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on a SLURM cluster (docs/study.md: A study on a SLURM cluster)")
    g.add_argument("--slurm", action="store_true",
                   help="submit the runs as one SLURM job array, and a job that builds the page "
                        "when they have ended, instead of running them through DVC's queue here")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="an sbatch option for the study's jobs, in the = form; repeat it: "
                        "--sbatch-arg=--partition=gpu --sbatch-arg=--time=2:00:00")
    g.add_argument("--gpus-per-run", type=int, default=1, metavar="N",
                   help="GPUs each run asks for, as --gres=gpu:N (default 1; 0 asks for none)")


def tracking(cfg: TrackingConfig, sets: list[str]) -> TrackingConfig:
    """The study's tracking settings: params.yaml's, with the ``-S tracking.*`` the runs get."""
    given = dict(item.partition("=")[::2] for item in sets)
    return dataclasses.replace(cfg, **{key: given[f"tracking.{key}"]
                                       for key in ("uri", "experiment") if f"tracking.{key}" in given})


def check(args: argparse.Namespace, project: Path, cfg: TrackingConfig) -> None:
    """What the nodes could not run, and options sbatch refuses, refused before the tracking
    store is opened or a file is written."""
    if not shutil.which("sbatch"):
        raise UserError("catgan study --slurm: no sbatch on PATH; run it where SLURM's commands "
                        "are, on a login node of the cluster (some need `module load slurm`)")
    check_committed(project)
    check_store(project, cfg)
    sbatch(["--test-only", *options(args, project, args.gpus_per_run)])


def options(args: argparse.Namespace, project: Path, gpus: int) -> list[str]:
    """The sbatch options of a job of the study: the user's last, so that they win."""
    return ["--export=ALL", f"--chdir={project}", *([f"--gres=gpu:{gpus}"] if gpus else []),
            *args.sbatch_arg]


def check_committed(project: Path) -> None:
    changed = git(project, "diff", "--name-only", "HEAD").splitlines()  # staged or not
    if changed:
        raise UserError(f"catgan study --slurm: {changed[0]} has changes that are not committed, "
                        "and the tasks run clones of the last commit; commit them (or git stash) "
                        "and submit again")


def check_store(project: Path, cfg: TrackingConfig) -> None:
    uri = tracking_uri(cfg, project)
    if cfg.enabled and (uri.startswith(("sqlite:", "file:")) or "://" not in uri):
        raise UserError(f"catgan study --slurm: the tracking store {redact(uri)} is a file on this "
                        "machine, which the nodes cannot share; name a tracking server they all "
                        "reach: export MLFLOW_TRACKING_URI=http://host:5000 (`make server` starts "
                        "one, docs/sharing-and-scaling.md), or -S tracking.uri=http://host:5000")


def submit(args: argparse.Namespace, runs: list, done: dict, project: Path) -> bool:
    """Submit the runs of ``runs`` that neither finished (``done`` in the tracking store, and an
    experiment here) nor wait or run in SLURM, and the page job after them. Whether anything is
    left to SLURM (False: every run finished, and the page can be built at once)."""
    out = (args.out or project / "studies" / args.name).resolve()
    folder = out / "slurm"
    queued = in_slurm(folder)
    todo = pick(runs, done, experiments(project), queued.runs)
    if not todo:
        if queued.runs:
            print("study: nothing to submit; the page job submitted with them builds the page "
                  "when they end", flush=True)
        return bool(queued.runs)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    k = 1 + max((int(p.stem.split("-")[1]) for p in folder.glob("submit-*.json")), default=0)
    plan = {"study": args.name, "project": str(project), "commit": git(project, "rev-parse", "HEAD"),
            "cache": dvc("cache", "dir", capture=True, cwd=project).strip(),
            "work": str(folder / "work"),
            "runs": [{"name": r.name, "overrides": r.overrides} for r in runs]}
    plan_file, array_script, page_script = (folder / f"{kind}-{k}{ext}" for kind, ext in
                                            (("submit", ".json"), ("submit", ".sh"), ("page", ".sh")))
    python = Path(sys.executable)
    write(plan_file, json.dumps(plan, indent=1))
    write(array_script, script(f"catgan study {args.name}, submission {k}: array task i runs the "
                               f"i-th run of {plan_file.name}",
                               [str(python), "-m", "catgan.study.slurmtask", str(plan_file)]))
    write(page_script, script(f"catgan study {args.name}: the page, once every run has ended",
                              page_command(args, out, python)))
    throttle = f"%{args.jobs}" if args.jobs else ""
    try:
        # Appended to, not truncated: a requeued task's log keeps its earlier attempts.
        array = sbatch([f"--array={','.join(map(str, todo))}{throttle}", f"--job-name=study-{args.name}",
                        f"--output={folder / 'logs' / '%A_%a.out'}", "--open-mode=append",
                        "--requeue", *options(args, project, args.gpus_per_run)], array_script)
    except UserError:
        for path in (plan_file, array_script, page_script):
            path.unlink()
        raise
    print(f"study: submitted {len(todo)} run(s) as SLURM job array {array}, "
          f"{args.gpus_per_run} GPU(s) each; logs in {folder / 'logs'}", flush=True)
    for index in todo:
        print(f"  {array}_{index}  {runs[index].name}", flush=True)
    after = ":".join([array, *sorted({task.split("_")[0] for _, task in queued.runs.values()})])
    page = sbatch([f"--dependency=afterany:{after}", f"--job-name=study-{args.name}-page",
                   f"--output={folder / 'logs' / 'page-%j.out'}", *options(args, project, 0)],
                  page_script)
    write(plan_file, json.dumps({**plan, "array_job": array, "indices": todo, "page_job": page},
                                indent=1))
    for job in queued.pages:  # it would build the page before the runs just submitted end
        if subprocess.run(["scancel", job], capture_output=True).returncode == 0:
            print(f"study: cancelled the earlier page job {job}", flush=True)
    print(f"study: page job {page} builds {out / 'study.html'} once every run has ended. Watch "
          f"them with `squeue --jobs {array},{page}` and the MLflow UI; run the same command again "
          "to submit the runs that did not finish", flush=True)
    return True


def pick(runs: list, done: dict, pushed: set[str], queued: dict[str, tuple[str, str]]) -> list[int]:
    """The indices of the runs to submit: neither ``done`` and ``pushed`` nor ``queued``."""
    todo = []
    for index, run in enumerate(runs):
        if run.name in done and run.name in pushed:
            print(f"study: {run.name} finished earlier; kept", flush=True)
        elif run.name in queued:
            state, task = queued[run.name]
            print(f"study: {run.name} is {state} in SLURM ({task}); not submitted again", flush=True)
        else:
            todo.append(index)
    return todo


def page_command(args: argparse.Namespace, out: Path, python: Path) -> list[str]:
    """`catgan study --page-only` for the same study, as the page job runs it in the checkout."""
    catgan = python.with_name("catgan")
    return [str(catgan) if catgan.exists() else "catgan", "study", "--name", args.name,
            "--arms", *args.arms, "--seeds", *map(str, args.seeds),
            *(["--saturating"] if args.saturating else []),
            *[a for item in args.set for a in ("-S", item)], "--out", str(out), "--page-only"]


def script(comment: str, command: list[str]) -> str:
    return f"#!/bin/bash\n# {comment}\nexec {shlex.join(command)}\n"


def write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sbatch(options: list[str], batch_script: Path | None = None) -> str:
    """The job id sbatch gives the script (None: options checked, nothing submitted); its
    refusal as one line."""
    proc = subprocess.run(["sbatch", "--parsable", *options,
                           *([str(batch_script)] if batch_script else [])],
                          input=None if batch_script else "#!/bin/sh\n", capture_output=True,
                          text=True)
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.strip()]
        raise UserError(f"sbatch refused {batch_script.name if batch_script else 'the options'}: "
                        f"{said[-1] if said else f'exit code {proc.returncode}'}; check the "
                        "--sbatch-arg values")
    return proc.stdout.strip().split(";")[0]


def experiments(project: Path) -> set[str]:
    """The names of the DVC experiments in ``project``'s git, of any baseline commit."""
    refs = git(project, "for-each-ref", "--format=%(refname)", EXP_REFS).split()
    # refs/exps/<2 hex>/<38 hex>/<name>; DVC's own refs (exec/, celery/) are not experiments.
    return {ref.rsplit("/", 1)[1] for ref in refs if len(ref.split("/")) == 5}


@dataclass(frozen=True)
class Queued:
    """What earlier submissions of a study still have in SLURM."""

    runs: dict[str, tuple[str, str]]  # run name -> (its state, its array task), waiting or running
    pages: list[str]  # page jobs that have not started


def in_slurm(folder: Path) -> Queued:
    runs, pages, plans = {}, [], {}
    for path in folder.glob("submit-*.json"):
        plan = json.loads(path.read_text())
        if "array_job" in plan:
            plans[plan["array_job"]] = [run["name"] for run in plan["runs"]]
            plans[plan["page_job"]] = []
    if not plans:
        return Queued({}, [])
    # squeue lists the jobs that wait or run; one line per array task with --array.
    proc = subprocess.run(["squeue", "--me", "--noheader", "--array", "--format=%F %K %T"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise UserError(f"squeue failed, so which runs still wait or run in SLURM is unknown "
                        f"({said}); submit again once it answers")
    for line in proc.stdout.splitlines():
        job, index, state = line.split()
        if plans.get(job) and index.isdigit():
            runs[plans[job][int(index)]] = (state.lower(), f"{job}_{index}")
        elif job in plans and state == "PENDING":
            pages.append(job)
    return Queued(runs, pages)


def git(project: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"`git {' '.join(args)}` failed in {project}: "
                        f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    return proc.stdout.strip()

