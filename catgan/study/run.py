"""``catgan study``: arms x seeds as queued DVC experiments under one MLflow parent run.

An arm is a named set of params overrides (catgan/study/arms.py: course-baseline, course-fused, modern and
the ablations). Each run is an ordinary experiment (``<study>-<arm>-s<seed>``, ``dvc exp show``
lists it; ``tracking.arm`` names its arm) whose
MLflow run is a child of the study's run through ``tracking.study``. Running the command again
resumes: runs the store already holds finished are kept, queued or running ones are waited for,
the rest are queued again and resume from their checkpoints. Then the study's runs are exported
from MLflow into a study folder (catgan/study/folder.py) and its page is built and logged.
With ``--slurm`` the runs go to a SLURM cluster as one job array instead (catgan/study/slurm.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from catgan.config import VARIANTS, check_settable, load_params, parse_params, project_root
from catgan.errors import UserError
from catgan.study import arms, queue, slurm
from catgan.study.dvccli import dvc
from catgan.tracking.client import MlflowTracker, make_tracker
from catgan.tracking.runmeta import ROLE_TAG, STUDY_TAG

@dataclass(frozen=True)
class Planned:
    name: str
    overrides: dict[str, str]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="catgan study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="study", help="study name: letters, digits, - and _ "
                   "(default: study)")
    p.add_argument("--arms", nargs="+", default=None, metavar="ARM",
                   help=f"arms to compare (default: {' '.join(arms.DEFAULT)}); known: "
                        f"{', '.join(arms.ARMS)}")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="shorthand for --arms course-<variant> ...")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--saturating", action="store_true",
                   help="one more run, course-baseline's first seed with train.loss=saturating, "
                        "for the page's section on the generator's loss")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a params.yaml override for every run, as for `dvc exp run -S`")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="experiments run at once (default 1; with --slurm, as many as SLURM allows)")
    p.add_argument("--out", type=Path, default=None,
                   help="study folder (default: studies/<name> at the project root)")
    p.add_argument("--page-only", action="store_true",
                   help="queue nothing: export what the store holds and build the page")
    slurm.add_arguments(p)
    args = p.parse_args(argv)
    args.arms = arms.chosen(args.arms, args.variants)
    return args


def plan(args: argparse.Namespace) -> list[Planned]:
    parse_params({"tracking": {"study": args.name}}, source="--name")  # it goes into MLflow filters
    common: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"-S {item!r}: expected KEY=VALUE, for example -S train.epochs=3")
        if key in ("train.seed", "tracking.study", "tracking.arm"):
            raise UserError(f"-S {key}: the study sets it; use --arms, --seeds or --name")
        setters = [a for a in args.arms if key in arms.get(a).overrides]
        if setters:
            raise UserError(f"-S {key}: arm {setters[0]} sets it (catgan/study/arms.py); leave it to "
                            "the arm, or pick arms that do not set it")
        # Queued experiments run in .dvc/tmp/exps/...: a relative path would resolve there.
        common[key] = str(Path(value).resolve()) if key == "data.path" and value else value
    check_settable(common)
    common["tracking.study"] = args.name
    runs = [Planned(f"{args.name}-{a}-s{s}", overrides(common, a, s))
            for a in args.arms for s in args.seeds]
    if args.saturating:
        a, s = "course-baseline", args.seeds[0]
        runs.append(Planned(f"{args.name}-saturating-{a}-s{s}",
                            {**overrides(common, a, s), "train.loss": "saturating"}))
    return runs


def overrides(common: dict[str, str], arm: str, seed: int) -> dict[str, str]:
    """One run's ``-S`` settings: the study's, the arm's and its seed."""
    return {**common, **arms.get(arm).settings(), "tracking.arm": arm,
            "train.seed": str(seed)}


def parent_run(tracker: MlflowTracker, name: str, settings: dict[str, str]) -> str:
    """The study's own MLflow run: found again on a re-run, created on the first."""
    found = tracker.study_run(name)
    if found:
        return found
    run = tracker.client.create_run(tracker.experiment_id, tags={
        ROLE_TAG: "study", STUDY_TAG: name, "mlflow.runName": f"study-{name}"})
    for key, value in sorted(settings.items()):
        tracker.client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def finished_runs(tracker: MlflowTracker, name: str) -> dict[str, object]:
    """The study's finished child runs with eval metrics, newest per DVC experiment name."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000,
        filter_string=f"tags.`{STUDY_TAG}` = '{name}' and attributes.status = 'FINISHED'")
    done: dict[str, object] = {}
    for run in runs:
        exp = run.data.tags.get("dvc_exp_name", "")
        if exp and ROLE_TAG not in run.data.tags and "eval.swd.swd_avg" in run.data.metrics:
            done.setdefault(exp, run)
    return done


def enqueue(runs: list[Planned], done: dict, state: dict[str, str]) -> list[str]:
    waiting = []
    for run in runs:
        if run.name in done:
            print(f"study: {run.name} finished earlier; kept", flush=True)
            continue
        waiting.append(run.name)
        if state.get(run.name) in queue.ACTIVE:
            print(f"study: {run.name} is {state[run.name].lower()}; waiting for it", flush=True)
            continue
        overrides = [a for k, v in run.overrides.items() for a in ("-S", f"{k}={v}")]
        dvc("exp", "run", "--queue", "--force", "--name", run.name, *overrides, capture=True)
        print(f"study: queued {run.name}", flush=True)
    return waiting


def wait(names: list[str], jobs: int, poll_s: float = 10.0) -> None:
    if not names:
        return
    queue.read("queue", "start", "-j", str(jobs))
    ended: list[str] = []

    def report(name: str, state: str) -> None:
        ended.append(name)
        said = "left DVC's queue without an end (dvc queue remove?)" if state == queue.GONE \
            else state.lower()
        print(f"study: {name} {said}", flush=True)

    try:
        states = queue.wait(names, poll_s=poll_s, on_end=report)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; {len(names) - len(ended)} run(s) go on in DVC's queue (dvc "
                        "queue status). Run the same command again to wait for them and build the "
                        "page") from None
    failed = [n for n in names if states[n] == "Failed"]
    if failed:
        raise UserError(f"study runs failed: {', '.join(failed)}; see `dvc queue logs <name>`, fix "
                        "the cause and run the same `catgan study` command again to resume")


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    runs = plan(args)
    tracking = slurm.tracking(load_params().tracking, args.set)
    submitting = args.slurm and not args.page_only
    if submitting:
        slurm.check(args, project_root(), tracking)
    tracker = make_tracker(tracking)
    if not isinstance(tracker, MlflowTracker):
        raise UserError("catgan study needs MLflow: set tracking.enabled: true in params.yaml")
    parent = parent_run(tracker, args.name, {
        "arms": " ".join(args.arms), "seeds": " ".join(map(str, args.seeds)),
        "saturating": str(args.saturating), **dict(s.partition("=")[::2] for s in args.set)})
    if submitting:
        if slurm.submit(args, runs, finished_runs(tracker, args.name), project_root()):
            return
    elif not args.page_only:
        waiting = enqueue(runs, finished_runs(tracker, args.name), queue.status())
        wait(waiting, args.jobs or 1)
    done = finished_runs(tracker, args.name)
    missing = [r.name for r in runs if r.name not in done]
    if missing:
        raise UserError(f"the MLflow store holds no finished run for {', '.join(missing)}; run "
                        "the same command without --page-only to train them")
    from catgan.study import export as studyexport
    from catgan.study import page as studypage
    from catgan.study import provenance  # torch and matplotlib: only at the end

    out = args.out or project_root() / "studies" / args.name
    command = ["catgan", "study", *(sys.argv[1:] if argv is None else argv)]
    made_by = provenance.record(command, wall_s=time.perf_counter() - started)
    studyexport.export(tracker, args.name, [done[r.name] for r in runs], out, made_by)
    page = studypage.publish(out)
    tracker.client.log_artifact(parent, str(page))
    tracker.client.set_terminated(parent, "FINISHED")
