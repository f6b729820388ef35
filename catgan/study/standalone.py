"""A study without DVC or MLflow, as benchmarks/gpu_study.py runs it (only torch, numpy and Pillow
needed): the data prepared; each run trained, evaluated and written as a run folder of the study
folder (catgan/study/folder.py); several at once in child processes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catgan.config import Params, flatten, parse_params
from catgan.data.archive import safe_extract_zip
from catgan.data.preprocess import load_images, preprocess
from catgan.errors import UserError
from catgan.metrics.evaluate import evaluate
from catgan.study.folder import run_meta, write_run
from catgan.training.codedeps import ROOT
from catgan.training.distributed import describe, select_device
from catgan.training.loop import steps_per_epoch, train


@dataclass(frozen=True)
class Job:
    """One run: what a worker process needs to train, evaluate and write it."""

    kind: str
    arm: str
    seed: int
    params: dict  # raw params, validated again by the worker
    images: str  # the prepared .npy
    data_hash: str
    study: str  # the study folder
    steps: int  # course runs: the pipeline run's optimisation steps, matched
    frames: int  # grids kept: evenly spaced over the epochs, the last always; 1 = the last only
    code: str  # the content hash of the code that runs it (catgan/study/provenance.py)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.arm}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.study) / "runs" / self.name

    @property
    def work_dir(self) -> Path:
        """Where it trains: its checkpoint and grids, kept until its run folder is written, so a
        run stopped mid-way (a signal, a session's end) goes on from its last epoch, bit-exact,
        when the study is run again. Beside the study folder, so the archive never packs it."""
        return Path(self.study).parent / "work" / self.name


def prepare_data(data: Path, scratch: Path, params: Params) -> tuple[Path, dict]:
    """The prepared uint8 array's path and study.json's data entry: content_hash, images, source."""
    d = params.data
    if data.suffix.lower() == ".npy" and data.is_file():
        images = load_images(data)  # its bytes' sha256 is preprocess's manifest content_hash
        return data, {"content_hash": hashlib.sha256(images).hexdigest(), "images": len(images),
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


def check_resumable(study: Path, info: dict) -> None:
    """Refuses to add runs to a study folder whose runs had other data or params."""
    path = study / "study.json"
    before = _must_match(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}
    for key, value in before.items():
        if value != _must_match(info)[key]:
            raise UserError(f"{path}: a study with other {key} ({value!r}) is there; pass "
                            "another --out, or delete that folder to start over")


def _must_match(info: dict) -> dict:
    # Data and params shape every run; arms, seeds and the extra runs may grow from one call
    # to the next, and the same images may come as a zip one time and as a .npy the next.
    params = {k: v for k, v in (info.get("settings") or {}).items() if "." in k}
    return {"name": info.get("name"), "data": (info.get("data") or {}).get("content_hash"),
            "params": params}


def grid_epochs(last: int, frames: int) -> list[int]:
    """``frames`` epochs evenly spaced over 0..last, the last one always among them."""
    return sorted({round(x) for x in np.linspace(last, 0, frames)})  # from the last: 1 frame is it


def run_one(job: Job, trainer: Callable) -> None:
    """Train ``job`` with ``trainer(job, params, images, device, grids folder)`` -> (G, D, history,
    step rows, run.json's loss, epochs, steps, images_seen...), evaluate, write its run folder."""
    params = parse_params(job.params)
    device = select_device(params.train.device)
    images = load_images(Path(job.images))
    started = time.perf_counter()
    G, D, history, step_rows, meta = trainer(job, params, images, device, job.work_dir / "grids")
    train_s = time.perf_counter() - started
    metrics, notes = evaluate(params, G, D, images, device)
    generator = None if job.kind != "study" else (G, {  # a candidate for the one that comes back
        "arm": job.arm, "variant": params.model.variant, "latent_dim": params.model.latent_dim,
        "run": job.name, "seed": job.seed, "swd_avg": metrics["swd"]["swd_avg"],
        "data_hash": job.data_hash, "code": job.code})
    grids = [job.work_dir / "grids" / f"epoch_{e:03d}.png"
             for e in grid_epochs(meta["epochs"], job.frames)]
    # train_s and wall_s count this process's share: a resumed run's earlier epochs ran elsewhere.
    write_run(job.run_dir, run_meta(
        job.kind, job.arm, job.seed, batch_size=params.train.batch_size,
        device=describe(device), eval=metrics, notes=notes, train_s=round(train_s, 3),
        code=job.code, wall_s=round(time.perf_counter() - started, 3), **meta),
        history, step_rows, [g for g in grids if g.is_file()], palette=True, generator=generator)
    shutil.rmtree(job.work_dir)


def pipeline(job: Job, params: Params, images: np.ndarray, device: torch.device, grids: Path):
    """``run_one``'s trainer for the pipeline's runs: catgan's own loop."""
    t = params.train
    result = train(params, images, job.data_hash, grids.parent, device=device)
    epochs = len(result.history)
    per_epoch = steps_per_epoch(len(images), t.batch_size, t.steps_per_epoch)
    return result.generator, result.discriminator, result.history, result.steps, {
        "loss": t.loss, "epochs": epochs, "steps": epochs * per_epoch,
        "images_seen": epochs * min(per_epoch * t.batch_size, len(images)),
        "resumed_from": result.resumed_from,
        "precision": t.precision, "compile": t.compile, "params": flatten(params)}


def run_all(jobs: list[Job], run: Callable[[Job], None], worker: str, parallel: int,
            deadline: float | None, logs: Path, stop_at: float | None = None,
            ) -> tuple[list[dict], list[str], list[Job], list[str]]:
    """Run ``jobs``, ``parallel`` at a time, none started after ``deadline``: one at a time by
    ``run`` in this process, several each in a child (``python -m <worker> --worker SPEC``, its
    output in a log), stopped if still going at ``stop_at`` so that what finished can be packed.
    Returns (the finished runs' run.json, failed runs' names, jobs not started, stopped runs' names).
    """
    pending, running = deque(jobs), []  # (job, its child process)
    deadline, stop_at = deadline or math.inf, stop_at or math.inf
    finished, failed, stopped = [], [], []

    def ended(job: Job, error: str | None) -> None:
        if error:
            failed.append(job.name)
            print(f"FAILED {job.name}: {error}", flush=True)
            return
        meta = json.loads((job.run_dir / "run.json").read_text(encoding="utf-8"))
        finished.append({"name": job.name, **meta})
        print(f"done  {job.name}: {meta['wall_s']:.1f} s ({meta['train_s']:.1f} s training)",
              flush=True)

    try:
        while running or pending and time.perf_counter() < deadline:
            while pending and len(running) < parallel and time.perf_counter() < deadline:
                job = pending.popleft()
                print(f"start {job.name}", flush=True)
                if parallel == 1:
                    try:
                        run(job)
                    except Exception as err:  # reported like a child's failure; the study goes on
                        ended(job, str(err) if isinstance(err, UserError)
                              else traceback.format_exc().strip())
                    else:
                        ended(job, None)
                else:
                    running.append((job, _child(job, logs, worker)))
            done = [(job, proc) for job, proc in running if proc.poll() is not None]
            if not done and running and time.perf_counter() >= stop_at:
                _stop([proc for _, proc in running])
                for job, _ in running:
                    stopped.append(job.name)
                    print(f"stop  {job.name}: the time limit (--stop-s) came first", flush=True)
                running = []
                break
            if running and not done:
                time.sleep(0.5)
            for job, proc in done:
                running.remove((job, proc))
                code = proc.returncode
                log = (logs / f"{job.name}.log").read_text(encoding="utf-8", errors="replace")
                tail = "\n".join(log.strip().splitlines()[-15:])
                ended(job, f"exit {code}; its log ends:\n{tail}" if code else None)
    finally:
        _stop([proc for _, proc in running])  # interrupted: leave no orphan training on the GPU
    return finished, failed, list(pending), stopped


def _child(job: Job, logs: Path, worker: str) -> subprocess.Popen:
    spec = logs / f"{job.name}.json"
    spec.write_text(json.dumps(dataclasses.asdict(job)), encoding="utf-8")
    # Several runs' progress bars on one terminal would be noise: start and end lines say enough.
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    with open(logs / f"{job.name}.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", worker, "--worker", str(spec)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """All of them signalled at once, then killed if still there after ``grace_s`` in all: a wave
    of 16 must not take 16 graces before the archive is packed inside the GPU hour's deadline."""
    for proc in procs:
        proc.terminate()
    until = time.perf_counter() + grace_s
    for proc in procs:
        try:  # gone before the archive is packed: no run folder appears behind its back
            proc.wait(max(0.0, until - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        print(f"time limit: {len(stopped)} runs stopped ({', '.join(stopped)}); run again to redo them")
    if failed:
        print(f"FAILED: {', '.join(failed)} (why: above); run again to retry them", file=sys.stderr)
