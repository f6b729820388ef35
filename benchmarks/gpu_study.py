"""The whole study on one GPU: the arms (catgan/study/arms.py: course-baseline, course-fused, modern, ...)
over seeds, the saturating G loss, and the course's own loop for parity, written as a study folder
(catgan/study/folder.py) and packed into one archive that ``catgan study-page`` turns into the study
page, with each arm's best generator beside it.

    python -m benchmarks.gpu_study --data PATH --out DIR [--epochs 60] [--seeds 0 1 2]
        [--arms course-baseline course-fused modern] [--variants V ...: --arms course-V ...]
        [--parallel K] [--precision bf16|fp32] [--[no-]compile]
        [--[no-]course] [--[no-]saturating] [--frames 16] [--budget-s S] [--stop-s S]
        [-S key=value ...]
        [--name gpu]

Needs only Python with torch, numpy and Pillow: the runs go through catgan.training.loop (the pipeline's
exact loop, no tracker), catgan.metrics.evaluate and the course's loop fed from catgan's prepared array,
none of which imports PyYAML, MLflow, DVC or torchvision. ``--data`` is a zip or folder of images
(prepared here with the preprocess stage's own code, so the content hash is the one the
pipeline's manifest records) or a prepared uint8 N x 3 x 64 x 64 ``.npy``.

On the device machine, which gets the working tree (64 MiB at most) and not ../shared: carry the
zip (50 MB). The prepared images.npy of the full set (9,303 x 3 x 64 x 64 = 114 MB) does not fit.

    here, once:  echo /.gpu-data/ >> .git/info/exclude && mkdir -p .gpu-data
                 cp ../shared/data/cats-kaggle.zip .gpu-data/
    there:       device run, carry [".gpu-data"], timeout_s 600:
                 set -o pipefail; benchmarks/gpu_study.sh --data .gpu-data/cats-kaggle.zip
                   --out /tmp/gpu-study 2>&1 | tee "$OUT/gpu_study.log";
                 cp /tmp/gpu-study/study.tar.gz /tmp/gpu-study/study.generator-*.pt "$OUT"/
    here:        catgan study-page study.tar.gz   (the archive that came back, with the
                 study.generator-<arm>.pt files beside it)

On CUDA every run starts at once, longest first (benchmarks/README.md, "GPU study": one wave fits
the 16 cores and 141 GB of an H200); on the CPU one after another. ``--parallel`` sets how many.
``--stop-s`` stops the runs still going (in child processes) at a time limit and packs the rest.

Each run writes DIR/study/runs/<kind>-<arm>-seed<N>/ whole or not at all, and a run whose
run.json is there is skipped, so an interrupted study resumes. Grids are kept as 256-colour PNGs
(a lossless 8x8 grid is ~0.6 MB): the last epoch's of every run, and ``--frames`` evenly spaced
ones of each arm's lowest-seed study run for the page's video, so the archive stays well
under the 16 MiB a file may have to come back from the device machine. The lowest-SWD study run
of each arm leaves its generator in fp16 beside the archive, as
``study.generator-<arm>.pt`` (at most 8 MiB each; catgan/generate/weightsfile.py): ``catgan sample``
draws from it and the study page shows its samples. study.json records the provenance
(catgan/study/provenance.py): the code's commit or, on a copy without .git, its content hash.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from benchmarks import reference_loop
from catgan.config import VARIANTS, Params, flatten, nested, parse_params
from catgan.data.archive import safe_extract_zip
from catgan.data.preprocess import load_images, preprocess
from catgan.errors import UserError, cli_entry
from catgan.fileio import atomic_dir, atomic_path
from catgan.generate import weightsfile
from catgan.images import grid_image, save_png
from catgan.metrics.evaluate import evaluate
from catgan.model.losses import grad_norm
from catgan.model.nets import sample
from catgan.study import folder as studydir
from catgan.study import arms
from catgan.study import provenance
from catgan.training.distributed import describe, select_device
from catgan.training.loop import COLUMNS, HISTORY_COLUMNS, steps_per_epoch, train
from catgan.training.outputs import write_csv

REPO = Path(__file__).resolve().parents[1]
ARCHIVE_LIMIT = 16 << 20  # the most one file may have to come back from the device machine
STEP_COLUMNS = ("step", "epoch", *COLUMNS)
# Seconds a run took on the H200 (../shared/studies/README.md), for the start order: longest first.
# A kind not listed here starts first, as the longest is the safe guess.
RUN_S = {"course": 250, "study": 165, "saturating": 165}
GENERATOR = "generator.pt"  # a study run's generator in fp16, in its run folder, not archived
# Set by this script's own flags: -S may not change them behind their back.
RESERVED = {"model.variant": "--arms", "train.seed": "--seeds", "train.epochs": "--epochs",
            "train.precision": "--precision",
            "train.compile": "--compile"}


@dataclass(frozen=True)
class Job:
    """One run: what a worker process needs to train, evaluate and write it."""

    kind: str
    arm: str
    variant: str
    seed: int
    params: dict  # raw params, validated again by the worker
    images: str  # the prepared .npy
    data_hash: str
    run_dir: str
    steps: int  # course runs: the pipeline run's optimisation steps, matched
    frames: int  # grids kept: evenly spaced over the epochs, the last always; 1 = the last only
    code: str  # the content hash of the code that runs it (catgan/study/provenance.py)

    @property
    def name(self) -> str:
        return run_name(self.kind, self.arm, self.seed)


def run_name(kind: str, arm: str, seed: int) -> str:
    return f"{kind}-{arm}-seed{seed}"


# ------------------------------------------------------------------------------------ settings

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="a zip or folder of images, or a prepared .npy")
    p.add_argument("--out", type=Path, help="the study folder and archive go here")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=None,
                   help=f"default: {' '.join(arms.DEFAULT)}; known: {', '.join(arms.ARMS)}")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, help="shorthand for --arms course-V ...")
    p.add_argument("--parallel", type=int, default=0,
                   help="runs at once, each its own process (default: all on CUDA, 1 on CPU)")
    p.add_argument("--precision", choices=("bf16", "fp32"),
                   help="pipeline runs' precision (default bf16 on CUDA, fp32 on CPU); course runs are fp32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--study", action=argparse.BooleanOptionalAction, default=True,
                   help="the pipeline's runs, arms x seeds (--no-study: parity runs only)")
    p.add_argument("--course", action=argparse.BooleanOptionalAction, default=True,
                   help="parity runs of the course's loop for the course arms, same seeds, steps "
                        "and batch")
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
    args.arms, args.seeds = arms.chosen(args.arms, args.variants), sorted(set(args.seeds))
    return args


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
    """catgan's defaults, this script's settings, then ``-S``, as raw params; and the device.

    bf16 is the default on CUDA only: a CPU without bf16 units emulates it (benchmarks/README.md:
    225 s against 12 s a step).
    """
    raw = merge({"train": {"epochs": args.epochs, "compile": args.compile}, "eval": {"every": 1},
                 "tracking": {"enabled": False}}, parse_overrides(args.overrides, args.arms))
    device = select_device(parse_params(raw, source="-S").train.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    raw["train"] = {**raw.get("train", {}), "device": device.type, "precision": precision}
    return raw, device


def one_wave(jobs: list[Job], args: argparse.Namespace, device: torch.device) -> tuple[int, list[Job]]:
    """How many run at once: all of them on CUDA (one wave), one on the CPU, or --parallel; and the
    jobs in start order, each with an equal share of the cores unless -S set train.threads.

    Several at once are the default on CUDA only: a GPU's runs wait on the host between small
    kernels, which other processes fill, while on a CPU they would only share its cores. Run
    together, the longest start first: when they do not all fit at once, that ends the last
    soonest; one at a time, the plan's order stands, so a budget cut leaves whole pairs.
    """
    parallel = args.parallel or (max(1, len(jobs)) if device.type == "cuda" else 1)
    if parallel > 1:
        jobs = sorted(jobs, key=lambda job: -RUN_S.get(job.kind, max(RUN_S.values()) + 1))
    threads = max(1, (os.cpu_count() or 1) // min(parallel, max(1, len(jobs))))
    return parallel, [job if job.params["train"].get("threads") else
                      dataclasses.replace(job, params=merge(job.params, {"train": {"threads": threads}}))
                      for job in jobs]


# ------------------------------------------------------------------------------------------ data

def prepare_data(data: Path, scratch: Path, params: Params) -> tuple[Path, dict]:
    """The prepared uint8 array's path and study.json's data entry: content_hash, images, source."""
    d = params.data
    if data.suffix.lower() == ".npy" and data.is_file():
        images = load_images(data)
        return data, {"content_hash": content_hash(images), "images": len(images),
                      "source": f"{data.name} (prepared array)"}
    if data.suffix.lower() == ".zip" and data.is_file():
        raw = scratch / "raw"
        safe_extract_zip(data, raw)
    elif data.is_dir():
        raw = data
    else:
        raise UserError(f"--data {data}: not a .zip of images, a folder of them or a prepared "
                        ".npy; pass one of those")
    manifest = preprocess(raw, scratch / "prepared", image_size=d.image_size, min_size=d.min_size,
                          dedup=d.dedup, max_bad_fraction=d.max_bad_fraction, workers=d.workers)
    source = (f"{data.name}: {manifest['files_found']:,} files, "
              f"{len(manifest['duplicates_removed']):,} duplicates removed")
    return scratch / "prepared" / "images.npy", {
        "content_hash": manifest["content_hash"], "images": manifest["files_used"], "source": source}


def content_hash(images: np.ndarray) -> str:
    """sha256 of the array's bytes, row block by row block: preprocess's manifest content_hash."""
    digest = hashlib.sha256()
    for start in range(0, len(images), 1024):
        digest.update(np.ascontiguousarray(images[start:start + 1024]))
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ runs

def plan(args: argparse.Namespace, raw: dict, images: Path, data: dict, study: Path,
         code: str) -> list[Job]:
    """Study runs, seeds interleaved so a budget cut leaves pairs; the saturating run; the course's."""
    t = parse_params(raw).train
    steps = args.epochs * steps_per_epoch(data["images"], t.batch_size, t.steps_per_epoch)
    first_seed = min(args.seeds)
    runs = [("study", a, s) for s in args.seeds for a in args.arms] if args.study else []
    if args.saturating:
        runs.append(("saturating", "course-baseline", first_seed))
    if args.course:  # the course's loop has none of the recipe's techniques: course arms only
        runs += [("course", a, s) for s in args.seeds for a in args.arms if arms.get(a).course]
    jobs = []
    for kind, name, seed in runs:
        arm = arms.get(name)
        saturating = {"loss": "saturating"} if kind == "saturating" else {}
        job_raw = merge(merge(raw, nested(arm.overrides)), {"train": {"seed": seed, **saturating}})
        animated = kind == "study" and seed == first_seed
        jobs.append(Job(kind, name, arm.variant, seed, job_raw, str(images), data["content_hash"],
                        str(study / "runs" / run_name(kind, name, seed)), steps,
                        args.frames if animated else 1, code))
    return jobs


def run_job(job: Job) -> None:
    """Train, evaluate and write one run folder."""
    (course_run if job.kind == "course" else pipeline_run)(job)


def pipeline_run(job: Job) -> None:
    params = parse_params(job.params)
    t = params.train
    device = select_device(t.device)
    images = load_images(Path(job.images))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"catgan-{job.name}-") as ckpt:
        result = train(params, images, job.data_hash, Path(ckpt), device=device)
        train_s = time.perf_counter() - started
        metrics, notes = evaluate(params, result.generator, result.discriminator, images, device)
        epochs, per_epoch = len(result.history), steps_per_epoch(len(images), t.batch_size, t.steps_per_epoch)
        meta = {"loss": t.loss, "epochs": epochs, "steps": epochs * per_epoch,
                "images_seen": epochs * min(per_epoch * t.batch_size, len(images)),
                "precision": t.precision, "compile": t.compile, "params": flatten(params)}
        generator = None
        if job.kind == "study":  # the candidates for the generator that comes back
            generator = (result.generator, {
                "arm": job.arm, "variant": job.variant, "latent_dim": params.model.latent_dim,
                "run": job.name,
                "seed": job.seed, "swd_avg": metrics["swd"]["swd_avg"], "data_hash": job.data_hash,
                "code": job.code})
        write_run(job, result.history, result.steps, Path(ckpt) / "grids", epochs,
                  _meta(job, params, meta, metrics, notes, device, started, train_s), generator)


def course_run(job: Job) -> None:
    """The course's loop for ``job.steps`` steps from torch.manual_seed(seed), evaluated like ours."""
    params = parse_params(job.params)
    t, m = params.train, params.model
    device = select_device(t.device)
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    torch.backends.cudnn.benchmark = False  # the course leaves cuDNN autotuning off
    images = load_images(Path(job.images))
    started = time.perf_counter()
    torch.manual_seed(job.seed)
    loader = reference_loop.array_loader(images, t.batch_size, device)
    course = reference_loop.setup(m.variant, m.latent_dim, t.lr, device)
    rows: list[dict] = []
    norms: list[torch.Tensor] = []  # kept on the device: the course's own host reads are enough

    def on_step(epoch: int, values: tuple[float, ...]) -> None:
        rows.append({"step": len(rows) + 1, "epoch": epoch, **dict(zip(COLUMNS, values))})
        norms.append(grad_norm(course.G.parameters()))  # G's gradients of the step just taken

    with tempfile.TemporaryDirectory(prefix=f"catgan-{job.name}-") as grids:
        def on_epoch(epoch: int) -> None:
            save_png(grid_image(sample(course.G, course.fixed_latent)),
                     Path(grids) / f"epoch_{epoch:03d}.png")

        on_epoch(0)
        reference_loop.train(course, loader, job.steps, device, on_step=on_step, on_epoch=on_epoch)
        for row, norm in zip(rows, torch.stack(norms).tolist()):
            row["g_grad_norm"] = norm
        train_s = time.perf_counter() - started
        # Scored like catgan's: D's logits, without the course's final Sigmoid.
        metrics, notes = evaluate(params, course.G, course.D[0], images, device)
        epochs = rows[-1]["epoch"]
        meta = {"loss": "non_saturating", "epochs": epochs, "steps": len(rows),
                "images_seen": len(rows) * t.batch_size, "precision": "fp32", "compile": False,
                "loop": "course (benchmarks/reference_loop.py)"}
        write_run(job, epoch_means(rows), [r for r in rows if r["step"] % t.log_every == 0],
                  Path(grids), epochs, _meta(job, params, meta, metrics, notes, device, started, train_s))


def _meta(job: Job, params: Params, meta: dict, metrics: dict, notes: dict,
          device: torch.device, started: float, train_s: float) -> dict:
    return {"kind": job.kind, "arm": job.arm, "overrides": arms.get(job.arm).overrides,
            "variant": job.variant, "seed": job.seed,
            "batch_size": params.train.batch_size, "device": describe(device), "eval": metrics,
            "notes": notes, "train_s": round(train_s, 3), "code": job.code,
            "wall_s": round(time.perf_counter() - started, 3), **meta}


def epoch_means(rows: list[dict]) -> list[dict]:
    """history.csv rows from per-step rows: each epoch's mean of COLUMNS (quality not measured)."""
    history = []
    for epoch in sorted({r["epoch"] for r in rows}):
        mine = [r for r in rows if r["epoch"] == epoch]
        history.append({"epoch": epoch, **{c: float(np.mean([r[c] for r in mine])) for c in COLUMNS}})
    return history


def grid_epochs(last: int, frames: int) -> list[int]:
    """``frames`` epochs evenly spaced over 0..last, the last one always among them."""
    if frames <= 1:
        return [last]
    return sorted({round(x) for x in np.linspace(0, last, frames)})


def write_run(job: Job, history: list[dict], steps: list[dict], grid_src: Path, last: int,
              meta: dict, generator: tuple[torch.nn.Module, dict] | None = None) -> None:
    """The run folder, all of it at once: a killed run leaves none, so a rerun redoes it."""
    with atomic_dir(Path(job.run_dir)) as tmp:
        if generator:
            weightsfile.write(tmp / GENERATOR, *generator)
        write_csv(history, tmp / "history.csv", HISTORY_COLUMNS)
        write_csv(steps, tmp / "steps.csv", STEP_COLUMNS)
        for epoch in grid_epochs(last, job.frames):
            src = grid_src / f"epoch_{epoch:03d}.png"
            if src.is_file():
                with Image.open(src) as grid:
                    small = grid.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
                (tmp / "grids").mkdir(exist_ok=True)
                small.save(tmp / "grids" / src.name, format="PNG", optimize=True)
        studydir.write_run_meta(tmp, meta)


# ---------------------------------------------------------------------------------- scheduling

class _Inline:
    """A run in this process, done when made: --parallel 1."""

    def __init__(self, job: Job, logs: Path) -> None:
        self.job, self.error = job, None
        try:
            run_job(job)
        except Exception as err:  # reported like a child's failure; the study goes on
            self.error = str(err) if isinstance(err, UserError) else traceback.format_exc().strip()

    def done(self) -> bool:
        return True

    def stop(self) -> None:
        pass


class _Child:
    """A run in a process of its own (``--worker``), its output in a log file."""

    def __init__(self, job: Job, logs: Path) -> None:
        self.job, self.error = job, None
        spec, self.log = logs / f"{job.name}.json", logs / f"{job.name}.log"
        spec.write_text(json.dumps(dataclasses.asdict(job)), encoding="utf-8")
        # Several runs' progress bars on one terminal would be noise: start and end lines say enough.
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_study", "--worker",
                                          str(spec)], cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        if self.proc.returncode:
            tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            self.error = f"exit {self.proc.returncode}; its log ends:\n" + "\n".join(tail)
        return True

    def stop(self) -> None:
        self.proc.terminate()
        try:  # gone before the archive is packed: no run folder appears behind its back
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_all(jobs: list[Job], parallel: int, deadline: float | None, logs: Path,
            stop_at: float | None = None) -> tuple[list[dict], list[str], list[Job], list[str]]:
    """Run ``jobs``, ``parallel`` at a time, none started after ``deadline``; runs in child
    processes still going at ``stop_at`` are stopped, so that what finished can be packed in time.

    Returns (each finished run's run.json, the failed runs' names, the jobs not started, the
    stopped runs' names).
    """
    start = _Inline if parallel == 1 else _Child
    pending, running = deque(jobs), []
    finished, failed, stopped = [], [], []
    try:
        while pending or running:
            while pending and len(running) < parallel and (deadline is None
                                                            or time.perf_counter() < deadline):
                job = pending.popleft()
                print(f"start {job.name}", flush=True)
                running.append(start(job, logs))
            if not running:
                break
            ended = [run for run in running if run.done()]
            if not ended and stop_at is not None and time.perf_counter() >= stop_at:
                for run in running:
                    run.stop()
                    stopped.append(run.job.name)
                    print(f"stop  {run.job.name}: the time limit (--stop-s) came first", flush=True)
                running = []
                break
            if not ended:
                time.sleep(0.5)
            for run in ended:
                running.remove(run)
                if run.error:
                    failed.append(run.job.name)
                    print(f"FAILED {run.job.name}: {run.error}", flush=True)
                    continue
                meta = json.loads((Path(run.job.run_dir) / "run.json").read_text(encoding="utf-8"))
                finished.append({"name": run.job.name, **meta})
                print(f"done  {run.job.name}: {meta['wall_s']:.1f} s "
                      f"({meta['train_s']:.1f} s training)", flush=True)
    finally:
        for run in running:  # interrupted: leave no orphan training on the GPU
            run.stop()
    return finished, failed, list(pending), stopped


# --------------------------------------------------------------------------------------- archive

def pack(study: Path, archive: Path) -> int:
    """``study`` (study.json and the finished run folders) as one .tar.gz, without the generators
    (files of their own beside it); returns its size."""
    def visible(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = PurePosixPath(info.name).parts
        hidden = any(part.startswith(".") for part in parts) or parts[-1] == GENERATOR \
            or parts[1:2] == (studydir.WEIGHTS,)
        return None if hidden else info

    with atomic_path(archive, suffix=".tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(study, arcname="study", filter=visible)
    size = archive.stat().st_size
    if size > ARCHIVE_LIMIT:
        raise UserError(f"{archive}: {size / 2**20:.1f} MiB, above the {ARCHIVE_LIMIT >> 20} MiB "
                        "a file may have to come back from the device machine; lower --frames "
                        "(grids kept per animated run) and run again: finished runs are skipped")
    return size


def best_generators(study: Path, out: Path, stem: str) -> tuple[list[Path], list[str]]:
    """Each arm's lowest-SWD study run's generator into ``study/weights/`` and beside the
    archive (``out/<stem>.generator-<arm>.pt``); returns the files written and the problems."""
    best: dict[str, tuple[float, Path]] = {}
    for run_json in sorted((study / "runs").glob("study-*/run.json")):
        meta = json.loads(run_json.read_text(encoding="utf-8"))
        swd, weights = meta["eval"]["swd"]["swd_avg"], run_json.parent / GENERATOR
        arm = arms.of_run(meta)
        if weights.is_file() and swd < best.get(arm, (float("inf"), None))[0]:
            best[arm] = (swd, weights)
    written, problems = [], []
    for arm, (_, weights) in sorted(best.items()):
        size = weights.stat().st_size
        if size > weightsfile.LIMIT:
            problems.append(f"{weights}: {size / 2**20:.1f} MiB, above the "
                            f"{weightsfile.LIMIT >> 20} MiB a weights file may have; not returned")
            continue
        for dest in (study / studydir.WEIGHTS / studydir.weights_name(arm),
                     out / f"{stem}.{studydir.weights_name(arm)}"):
            with atomic_path(dest, suffix=".pt") as tmp:
                shutil.copyfile(weights, tmp)
        written.append(dest)
    return written, problems


# ------------------------------------------------------------------------------------------ main

def check_resumable(study: Path, info: dict) -> None:
    path = study / "study.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    before, now = _shaping(old), _shaping(info)
    for key, value in before.items():
        if value != now[key]:
            raise UserError(f"{path}: a study with other {key} ({value!r}) is there; pass "
                            "another --out, or delete that folder to start over")


def _shaping(info: dict) -> dict:
    # Data and params shape every run; arms, seeds and the extra runs may grow from one call
    # to the next, and the same images may come as a zip one time and as a .npy the next.
    params = {k: v for k, v in (info.get("settings") or {}).items() if "." in k}
    return {"name": info.get("name"), "data": (info.get("data") or {}).get("content_hash"),
            "params": params}


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
    command = ["python", "-m", "benchmarks.gpu_study", *map(str, args.argv)]
    made_by = provenance.record(command, device)
    with tempfile.TemporaryDirectory(prefix="catgan-gpu-study-") as scratch:
        images, data = prepare_data(args.data, Path(scratch), params)
        info = study_info(args, params, device, data)
        check_resumable(study, info)
        studydir.write_study(study, {**info, "provenance": made_by})
        jobs = plan(args, raw, images, data, study, made_by["code"]["content_hash"])
        todo = [job for job in jobs if not (Path(job.run_dir) / "run.json").is_file()]
        for job in jobs:
            if job not in todo:
                print(f"skip  {job.name}: finished earlier", flush=True)
        parallel, todo = one_wave(todo, args, device)
        logs = Path(scratch) / "logs"
        logs.mkdir()
        finished, failed, not_started, stopped = run_all(todo, parallel, deadline, logs, stop_at)
    weights, problems = best_generators(study, args.out, "study")
    made_by["wall_s"] = round(time.perf_counter() - started, 1)
    studydir.write_study(study, {**info, "provenance": made_by})
    size = pack(study, args.out / "study.tar.gz")
    report(finished, failed, not_started, stopped, time.perf_counter() - started)
    print(f"archive {args.out / 'study.tar.gz'}: {size / 2**20:.2f} MiB")
    for path in weights:
        print(f"generator {path}: {path.stat().st_size / 2**20:.2f} MiB")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    print(provenance.line(made_by))
    return 1 if failed or problems else 0


def report(finished: list[dict], failed: list[str], not_started: list[Job], stopped: list[str],
           total_s: float) -> None:
    print("\nrun | wall s | training s")
    for result in finished:
        print(f"{result['name']} | {result['wall_s']:.1f} | {result['train_s']:.1f}")
    print(f"total wall time: {total_s:.1f} s for {len(finished)} runs")
    if not_started:
        print(f"budget spent: {len(not_started)} runs not started "
              f"({', '.join(job.name for job in not_started)}); run again to add them")
    if stopped:
        print(f"time limit: {len(stopped)} runs stopped ({', '.join(stopped)}); run again to redo "
              "them")
    if failed:
        print(f"FAILED: {', '.join(failed)} (why: above); run again to retry them", file=sys.stderr)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_job(Job(**json.loads(args.worker.read_text(encoding="utf-8"))))
        return 0
    return run_study(args)


if __name__ == "__main__":
    sys.exit(main())
