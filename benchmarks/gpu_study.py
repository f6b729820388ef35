"""The whole study on one GPU: every arm that is not an ablation (catgan/study/arms.py:
course-baseline, course-fused, modern, ...) over seeds and the saturating G loss, optionally the
course's own loop for parity (``--course``), written as a study folder (catgan/study/folder.py) and
packed into one archive that ``catgan study-page`` turns into the study page, with each arm's best
generator beside it in fp16.

    python -m benchmarks.gpu_study --data PATH --out DIR [--epochs 60] [--seeds 0 1 2] [--arms
        A B ...] [--course] [--parallel K] [--budget-s S] [--stop-s S] [-S key=value ...]

This file is the command line and the plan: which runs, in which order, how many at once; the runs
are catgan/study/standalone.py's (the course's loop benchmarks/reference_loop.py's). Needs only
torch, numpy and Pillow. ``--data``: a zip or folder of images (prepared by the preprocess stage's
code: the content hash is the pipeline manifest's) or a prepared uint8 N x 3 x 64 x 64 ``.npy``.

On the device machine, one 600 s command runs it with its deadlines, then the throughput benchmark,
and returns the files: benchmarks/gpu_hour.sh (benchmarks/README.md, "GPU hour", says how to carry
the data there). Back here: ``catgan study-page study.tar.gz``, the study.generator-<arm>.pt files
beside it.

On CUDA every run starts at once, longest first (one wave: 16 runs on the 16 cores and 141 GB of
an H200); on the CPU one after another. ``--parallel`` sets how many. ``--budget-s`` starts no run
after a time, ``--stop-s`` stops the runs still going (in child processes) and packs the rest.

Each run writes DIR/study/runs/<kind>-<arm>-seed<N>/ whole or not at all; one whose run.json is
there is skipped, so an interrupted study resumes. A run trains in DIR/work/<kind>-<arm>-seed<N>/
(its checkpoint after each epoch, its grids), removed once its run folder is written: a pipeline
run stopped mid-way goes on from its last epoch, bit-exact, when the same command is run again.
``--frames`` grids of each arm's lowest-seed run are kept for the page's video; each arm's
lowest-SWD run's generator comes back beside the archive.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import reference_loop
from catgan.config import VARIANTS, Params, flatten, nested, parse_params
from catgan.errors import UserError, cli_entry
from catgan.study import arms, provenance, standalone
from catgan.study import folder as studydir
from catgan.study.standalone import Job
from catgan.training.distributed import describe, select_device
from catgan.training.loop import steps_per_epoch

# Seconds a run took on the H200 (../shared/studies/README.md), for the start order: longest first.
# A kind not listed here starts first, as the longest is the safe guess.
RUN_S = {"course": 250, "study": 165, "saturating": 165}
# Set by this script's own flags: -S may not change them behind their back.
RESERVED = {"model.variant": "--arms", "train.seed": "--seeds", "train.epochs": "--epochs",
            "train.precision": "--precision", "train.compile": "--compile"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="a zip or folder of images, or a prepared .npy")
    p.add_argument("--out", type=Path, help="the study folder and archive go here")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=None,
                   help=f"default: every arm that is not an ablation ({' '.join(default_arms())}); "
                        f"known: {', '.join(arms.ARMS)}")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, help="shorthand for --arms course-V ...")
    p.add_argument("--parallel", type=int, default=0,
                   help="runs at once, each its own process (default: all on CUDA, 1 on CPU)")
    p.add_argument("--precision", choices=("bf16", "fp32"),
                   help="pipeline runs' precision (default bf16 on CUDA, fp32 on CPU); course runs are fp32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--study", action=argparse.BooleanOptionalAction, default=True,
                   help="the pipeline's runs, arms x seeds (--no-study: parity runs only)")
    p.add_argument("--course", action=argparse.BooleanOptionalAction, default=False,
                   help="add parity runs of the course's loop for the course arms, same seeds, steps "
                        "and batch (off: measured at 60 epochs already, ../shared/studies/README.md)")
    p.add_argument("--saturating", action=argparse.BooleanOptionalAction, default=True,
                   help="one more run: course-baseline, lowest seed, train.loss saturating")
    p.add_argument("--frames", type=int, default=16,
                   help="grids kept of each arm's lowest-seed study run, for the page's video")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="start no run after this many seconds (0: no limit); the archive holds what finished")
    p.add_argument("--stop-s", type=float, default=0.0,
                   help="stop the runs still going after this many seconds and pack what finished "
                        "(0: no limit); a second call redoes them")
    p.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a params.yaml key, dotted as in `dvc exp run -S` (repeatable)")
    p.add_argument("--name", default="gpu")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # one run, for --parallel > 1
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return args
    if not (args.data and args.out):
        p.error("--data and --out are required")
    for flag, value, low in (("--epochs", args.epochs, 1), ("--parallel", args.parallel, 0),
                             ("--frames", args.frames, 1), ("--seeds", min(args.seeds), 0)):
        if value < low:
            p.error(f"{flag} must be at least {low}, got {value}")
    args.arms = arms.chosen(args.arms or (None if args.variants else default_arms()), args.variants)
    args.seeds = sorted(set(args.seeds))
    if not (args.study or args.saturating or args.course):
        p.error("--no-study and --no-saturating leave no run to do; add --course for the parity runs")
    return args


def default_arms() -> list[str]:
    """Every arm that is not an ablation, in the registry's order: the study's comparison."""
    return [name for name, arm in arms.ARMS.items() if not arm.ablation]


def parse_overrides(items: list[str], arm_names: list[str] = ()) -> dict:
    """``-S a.b=value`` items as a nested dict; values read as JSON where they parse, else text.
    A key that one of ``arm_names`` sets is refused: the arm would override it for its runs."""
    flat: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"-S {item!r}: expected KEY=VALUE, e.g. -S train.batch_size=64")
        if key in RESERVED:
            raise UserError(f"-S {key}: the study sets it per run; use {RESERVED[key]} instead")
        setters = [a for a in arm_names if key in arms.get(a).overrides]
        if setters:
            raise UserError(f"-S {key}: arm {setters[0]} sets it (catgan/study/arms.py); leave it to "
                            "the arm, or pick arms that do not set it")
        try:
            flat[key] = json.loads(text)
        except ValueError:
            flat[key] = text
    return nested(flat)


def merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def base_params(args: argparse.Namespace) -> tuple[dict, torch.device]:
    """catgan's defaults, this script's settings, then ``-S``, as raw params; and the device. bf16
    is the default on CUDA only: a CPU without bf16 units emulates it (225 s against 12 s a step)."""
    raw = merge({"train": {"epochs": args.epochs, "compile": args.compile}, "eval": {"every": 1},
                 "tracking": {"enabled": False}}, parse_overrides(args.overrides, args.arms))
    device = select_device(parse_params(raw, source="-S").train.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    raw["train"] = {**raw.get("train", {}), "device": device.type, "precision": precision}
    return raw, device


def runs_at_once(jobs: list[Job], args: argparse.Namespace, device: torch.device) -> int:
    """--parallel, else all of them on CUDA (a GPU's runs wait on the host between small kernels,
    which other processes fill) and one on the CPU (where they would only share its cores)."""
    return args.parallel or (max(1, len(jobs)) if device.type == "cuda" else 1)


def start_order(jobs: list[Job], parallel: int) -> list[Job]:
    """The jobs in the order they start, each with an equal share of the cores unless -S set
    train.threads: longest first when several run at once (the last ends soonest), else the plan's
    order (a budget cut leaves whole pairs)."""
    if parallel > 1:
        jobs = sorted(jobs, key=lambda job: -RUN_S.get(job.kind, max(RUN_S.values()) + 1))
    threads = max(1, (os.cpu_count() or 1) // min(parallel, max(1, len(jobs))))
    return [job if job.params["train"].get("threads") else
            dataclasses.replace(job, params=merge(job.params, {"train": {"threads": threads}}))
            for job in jobs]


def runs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(kind, arm, seed) of every run: study runs, seeds interleaved so a budget cut leaves pairs;
    the saturating run; the course's."""
    planned = [("study", a, s) for s in args.seeds for a in args.arms] if args.study else []
    if args.saturating:
        planned.append(("saturating", arms.course_arm("baseline").name, min(args.seeds)))
    if args.course:  # the course's loop has none of the recipe's techniques: course arms only
        planned += [("course", a, s) for s in args.seeds for a in args.arms if arms.get(a).course]
    return planned


def plan(args: argparse.Namespace, raw: dict, images: Path, data: dict, study: Path,
         code: str) -> list[Job]:
    """The runs as jobs, in ``runs``' order."""
    t = parse_params(raw).train
    steps = args.epochs * steps_per_epoch(data["images"], t.batch_size, t.steps_per_epoch)
    first_seed = min(args.seeds)
    jobs = []
    for kind, arm, seed in runs(args):
        saturating = {"train.loss": "saturating"} if kind == "saturating" else {}
        job_raw = merge(raw, nested({**arms.get(arm).overrides, "train.seed": seed, **saturating}))
        frames = args.frames if kind == "study" and seed == first_seed else 1  # animated on the page
        jobs.append(Job(kind, arm, seed, job_raw, str(images), data["content_hash"], str(study),
                        steps, frames, code))
    return jobs


def run_job(job: Job) -> None:
    standalone.run_one(job, reference_loop.study_train if job.kind == "course" else standalone.pipeline)


def study_info(args: argparse.Namespace, params: Params, device: torch.device, data: dict) -> dict:
    """study.json: the name, device, data and every setting that shapes the runs."""
    per_run = ("model.variant", "train.seed", "train.loss", "train.threads")
    settings = {"arms": " ".join(args.arms), "seeds": " ".join(map(str, args.seeds)),
                "course": args.course, "saturating": args.saturating, "frames": args.frames,
                **{k: v for k, v in flatten(params).items()
                   if k.startswith(("model.", "train.", "eval.")) and k not in per_run}}
    return {"name": args.name, "device": describe(device), "data": data, "settings": settings}


def run_study(args: argparse.Namespace) -> int:
    """Prepare the data, run what is not done yet, pack the archive and write the best generators
    beside it; exit status 1 if a run or a generator failed."""
    started = time.perf_counter()
    deadline = started + args.budget_s if args.budget_s else None
    stop_at = started + args.stop_s if args.stop_s else None
    raw, device = base_params(args)
    params = parse_params(raw)
    study = args.out / "study"
    made_by = provenance.record(["python", "-m", "benchmarks.gpu_study", *map(str, args.argv)],
                                device)
    with tempfile.TemporaryDirectory(prefix="catgan-gpu-study-") as scratch:
        images, data = standalone.prepare_data(args.data, Path(scratch), params)
        info = study_info(args, params, device, data)
        standalone.check_resumable(study, info)
        studydir.write_study(study, {**info, "provenance": made_by})
        jobs = plan(args, raw, images, data, study, made_by["code"]["content_hash"])
        todo = [job for job in jobs if not (job.run_dir / "run.json").is_file()]
        for job in jobs:
            if job not in todo:
                print(f"skip  {job.name}: finished earlier", flush=True)
        parallel = runs_at_once(todo, args, device)
        logs = Path(scratch) / "logs"
        logs.mkdir()
        finished, failed, not_started, stopped = standalone.run_all(
            start_order(todo, parallel), run_job, "benchmarks.gpu_study", parallel, deadline, logs,
            stop_at)
    weights, problems = studydir.best_generators(study, args.out, "study")
    made_by["wall_s"] = round(time.perf_counter() - started, 1)
    studydir.write_study(study, {**info, "provenance": made_by})
    size = studydir.pack(study, args.out / "study.tar.gz")
    standalone.report(finished, failed, not_started, stopped, time.perf_counter() - started)
    print(f"archive {args.out / 'study.tar.gz'}: {size / 2**20:.2f} MiB")
    for path in weights:
        print(f"generator {path}: {path.stat().st_size / 2**20:.2f} MiB")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    print(provenance.line(made_by))
    return 1 if failed or problems else 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_job(Job(**json.loads(args.worker.read_text(encoding="utf-8"))))
        return 0
    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
