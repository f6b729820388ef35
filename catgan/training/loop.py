"""A training run around the GAN step (catgan/training/step.py): set-up, resume, the epochs, and
after each epoch the quality check, the fixed-latent grid, the checkpoint and the tracker's values.
Exact: epoch means of every step (read from the device every ``train.log_every`` steps only),
bit-exact resume, and the same trajectory whether grids and checks are made or not.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.config import Params, flatten
from catgan.errors import UserError
from catgan.images import grid_image, save_png
from catgan.model.nets import sample
from catgan.progress import progress
from catgan.training import checkpoint
from catgan.training.codedeps import ROOT, closure
from catgan.training.distributed import Dist, describe, select_device
from catgan.training.monitor import Monitor
from catgan.training.outputs import COLUMNS, EPOCH_KEY, HISTORY_COLUMNS, STEP_KEY, TrainResult
from catgan.training.seeding import seed_everything
from catgan.training.state import TrainingState, new_state
from catgan.training.step import gan_step
from catgan.training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)

# Imported by training but unable to move its trajectory: what it logs, writes and measures
# (the quality check is tested bit-exact). Editing them re-runs the stage, which then resumes the
# finished checkpoint at once; every other module the loop imports is hashed into its key.
# Package __init__ files hold docstrings only, and catgan/metrics/ only measures.
_CANNOT_MOVE_TRAJECTORY = {"catgan/" + name for name in (
    "config.py", "errors.py", "fileio.py", "images.py", "progress.py", "training/codedeps.py",
    "training/monitor.py", "training/outputs.py", "training/tracker.py")}


class TrainingDiverged(UserError):
    pass


def training_hash(params: Params, data_hash: str) -> str:
    """What shapes the trajectory: params, data and the training code. Epochs are left out so
    that a finished run can be extended by raising train.epochs."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items()
             if k not in ("epochs", "device", "threads", "channels_last", "log_every")}
    code = {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in trajectory_code()}
    blob = json.dumps({"model": dataclasses.asdict(params.model), "train": train,
                       "data": data_hash, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.cache
def trajectory_code() -> tuple[str, ...]:
    """The project files, relative to the root, that the training loop's trajectory depends on."""
    files = (p.relative_to(ROOT).as_posix() for p in closure(Path(__file__)))
    return tuple(sorted(f for f in files
                        if f not in _CANNOT_MOVE_TRAJECTORY and not f.endswith("/__init__.py")
                        and not f.startswith("catgan/metrics/")))


def checkpoint_dir(root: Path, params: Params, data_hash: str) -> Path:
    """One folder per training configuration under ``root``, shared by every DVC experiment. Not a
    DVC output, so the stage stays in DVC's run cache and a killed queued or temp experiment
    resumes when it is run again."""
    name = f"{params.model.variant}-seed{params.train.seed}-{training_hash(params, data_hash)[:12]}"
    return root / "checkpoints" / name


def train(params: Params, images: np.ndarray, data_hash: str, ckpt_dir: Path,
          tracker: Tracker | None = None, dist: Dist | None = None,
          device: torch.device | None = None) -> TrainResult:
    """Train from scratch or resume from ``ckpt_dir/last.pt``; grids go to ``ckpt_dir/grids``.
    Under torchrun every process calls this; only the main one writes files and has a real tracker.
    """
    t, e = params.train, params.eval
    tracker, dist = tracker or NullTracker(), dist or Dist()
    device = device or select_device(t.device, dist.local_rank)
    steps = _steps_per_epoch(t, dist, device, len(images))
    seed_everything(t.seed, t.threads or max(1, (os.cpu_count() or 1) // dist.local_world))
    monitor = Monitor(images, every=e.every, samples=e.monitor_samples, seed=e.seed,
                      latent_dim=params.model.latent_dim, batch_size=e.batch_size, device=device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    state = new_state(params, device, dist)
    run = _Run(ckpt_dir, training_hash(params, data_hash), tracker, monitor)
    run.begin(state, params, {"device": describe(device), "data_images": len(images),
                              "processes": dist.world})
    resumed_from = state.epoch
    data = torch.from_numpy(np.array(images)).to(device)  # one copy: the memmap is read-only
    try:
        for epoch in range(resumed_from + 1, t.epochs + 1):
            row, step_rows = _epoch(state, data, params, epoch, steps)
            run.end_epoch(state, row, step_rows)
    except BaseException:
        tracker.finish("FAILED")
        raise
    return TrainResult(state.generator, state.D, state.history, state.steps, run.run_id,
                       resumed_from)


@dataclass
class _Run:
    """What a run keeps around its TrainingState: checkpoint, grids, quality checks, tracker."""

    ckpt_dir: Path
    key: str  # training_hash: a checkpoint with another one is not resumed
    tracker: Tracker
    monitor: Monitor
    run_id: str | None = None

    def begin(self, s: TrainingState, params: Params, tags: dict) -> None:
        """Resume from the checkpoint where it fits, else start afresh; start the tracker's run."""
        path, grids = self.ckpt_dir / "last.pt", self.ckpt_dir / "grids"
        saved = checkpoint.load(path)
        if saved and saved.get("train_hash") != self.key:
            log.warning("checkpoint %s was made with other params or data: starting fresh", path)
            saved = None
        elif saved and saved["epoch"] > params.train.epochs:
            log.warning("checkpoint %s is at epoch %d, beyond train.epochs = %d: starting fresh",
                        path, saved["epoch"], params.train.epochs)
            saved = None
        _check_agreement(s.dist, self.key, saved["epoch"] if saved else 0, path)
        if saved:
            s.load_state_dict(saved)
            log.info("resuming from %s at epoch %d", path, s.epoch)
        self.run_id = self.tracker.start(flatten(params), tags,
                                         run_id=saved["run_id"] if saved else None)
        if saved:
            # A kill between an epoch's checkpoint and its MLflow calls lost them: log the
            # checkpoint's history again; the tracker skips every value the run already holds.
            self.tracker.log_rows(s.history, "epoch", HISTORY_COLUMNS[1:], prefix=EPOCH_KEY)
            self.tracker.log_rows(s.steps, "step", COLUMNS, prefix=STEP_KEY)
            for epoch in range(s.epoch + 1) if s.dist.main else ():  # and the grids it has
                if (grid := grids / f"epoch_{epoch:03d}.png").is_file():
                    with Image.open(grid) as image:
                        self.tracker.log_image(image.convert("RGB"), key="samples", step=epoch)
        else:
            if s.dist.main:
                shutil.rmtree(grids, ignore_errors=True)
            self.save_grid(s)

    def end_epoch(self, s: TrainingState, row: dict, step_rows: list[dict]) -> None:
        """BatchNorm statistics made one, the quality check when due, grid, checkpoint, tracker."""
        for net in (s.G, s.D, *([s.ema.module] if s.ema is not None else [])):
            s.dist.average_batchnorm_statistics(net)
        s.epoch = row["epoch"]
        if self.monitor.due(s.epoch):
            started = time.perf_counter()
            row.update(self.monitor.measure(s.generator, s.D))
            if s.dist.main:
                log.info("epoch %d quality: SWD x1e3 %.2f, D(real) %.3f, D(fake) %.3f, diversity "
                         "%.2f (%.1f s)", s.epoch, row["swd_avg"], row["fixed_real_score"],
                         row["fixed_fake_score"], row["diversity_ratio"], time.perf_counter() - started)
        s.history.append(row)
        s.steps.extend(step_rows)
        self.save_grid(s)
        saved = s.state_dict()  # in every process: it gathers their random states
        if s.dist.main:
            checkpoint.save(self.ckpt_dir / "last.pt",
                            {"train_hash": self.key, "run_id": self.run_id, **saved})
        self.tracker.log_metrics({EPOCH_KEY + k: v for k, v in row.items() if k != "epoch"},
                                 step=s.epoch)
        self.tracker.log_rows(step_rows, "step", COLUMNS, prefix=STEP_KEY)
        s.dist.barrier()  # no process starts an epoch whose predecessor is not on disk

    def save_grid(self, s: TrainingState) -> None:
        # sample() uses no RNG and restores BN statistics: the grid cannot change the trajectory.
        # Every process samples (SyncBatchNorm needs them all); only the main one writes.
        image = grid_image(sample(s.generator, s.fixed_z))
        if s.dist.main:
            save_png(image, self.ckpt_dir / "grids" / f"epoch_{s.epoch:03d}.png")
            self.tracker.log_image(image, key="samples", step=s.epoch)


def _check_agreement(dist: Dist, key: str, epoch: int, ckpt_path: Path) -> None:
    """Processes on other nodes read their own params, data and checkpoint: if they differ, the
    collectives would deadlock or silently mix two trainings."""
    seen = set(dist.gather((key, epoch)))
    if len({k for k, _ in seen}) > 1:
        raise UserError("the processes were given different params, data or training code: every "
                        "node must run the same checkout (one on a shared filesystem)")
    if len(seen) > 1:  # only rank 0 writes the checkpoint
        raise UserError(f"{ckpt_path} is not the same file in every process (some would resume, "
                        "some start over): on several nodes, checkpoints/ must be on a filesystem "
                        "they all share")


def _steps_per_epoch(t, dist: Dist, device: torch.device, n: int) -> int:
    if t.sync_bn and dist.world > 1 and device.type != "cuda":
        raise UserError("train.sync_bn = true needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                        "set train.sync_bn: false")
    if t.batch_size % dist.world:
        across = (f"train.nproc = {dist.world}" if dist.world == dist.local_world else
                  f"the {dist.world} processes (train.nproc = {dist.local_world} on each of "
                  f"{dist.world // dist.local_world} nodes)")
        raise UserError(f"train.batch_size = {t.batch_size} must be a multiple of {across}: "
                        "it is the global batch, split evenly across the processes")
    if dist.world > 1 and n < t.batch_size:
        raise UserError(f"train.batch_size = {t.batch_size} is larger than the {n} training images; "
                        "lower it or use more data")
    return steps_per_epoch(n, t.batch_size, t.steps_per_epoch, dist.world)


def steps_per_epoch(n: int, batch_size: int, cap: int = 0, world: int = 1) -> int:
    """Steps in one pass over ``n`` images, at most ``cap`` (0: no cap)."""
    # With several processes the last partial batch is dropped: it could not be split evenly.
    steps = math.ceil(n / batch_size) if world == 1 else n // batch_size
    return min(steps, cap) if cap else steps


def _epoch(s: TrainingState, data: torch.Tensor, params: Params, epoch: int, steps: int):
    """One pass; per-step values stay on the device until a ``log_every`` boundary."""
    t, dist = params.train, s.dist
    s.G.train()
    s.D.train()
    perm = torch.randperm(data.shape[0], generator=s.order, device=data.device)
    values = torch.zeros(steps, len(COLUMNS), device=data.device)
    first_step = (epoch - 1) * steps
    step_rows, read = [], 0
    bar = progress(range(steps), f"epoch {epoch}/{t.epochs}", show=dist.main, leave=False,
                   dynamic_ncols=True)
    for i in bar:
        shard = perm[i * t.batch_size:(i + 1) * t.batch_size].tensor_split(dist.world)[dist.rank]
        real = data[shard].float().div_(127.5).sub_(1)
        if t.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        values[i] = torch.stack(gan_step(s, real, params))
        logged = (first_step + i + 1) % t.log_every == 0
        if logged or i + 1 == steps:
            host = dist.average(values[read:i + 1]).cpu().numpy()
            _check_finite(host, epoch, read)
            if logged:
                step_rows.append({"step": first_step + i + 1, "epoch": epoch,
                                  **dict(zip(COLUMNS, host[-1].tolist()))})
            bar.set_postfix({c: f"{v:.3f}" for c, v in zip(COLUMNS[:4], host[-1])})
            read = i + 1
    means = dist.average(values.mean(dim=0)).tolist()
    row = {"epoch": epoch, **dict(zip(COLUMNS, means))}
    if dist.main:
        log.info("epoch %d: %s", epoch, ", ".join(f"{c} {row[c]:.4f}" for c in COLUMNS))
    return row, step_rows


def _check_finite(values: np.ndarray, epoch: int, first: int) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        step, col = bad[0]
        raise TrainingDiverged(
            f"{COLUMNS[col]} became {values[step, col]} at epoch {epoch}, step {first + step + 1} "
            "of that epoch; the last good checkpoint is kept. Lower train.lr or try model.init: dcgan")
