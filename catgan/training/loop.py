"""The course's DCGAN training loop, made exact: epoch means, fixed-latent grids, bit-exact resume.

Per batch: one D step (real -> 1, fake -> 0, loss = sum of both), then one G step on a fresh
latent batch. Per-step values stay on the device and are read once every ``train.log_every``
steps, so the loop does not wait on the host after every step.

Beyond the course, each off by default: the relativistic losses (``train.loss``), DiffAugment
before D (``train.augment``), an average of G's weights (``train.ema``) that the grids, the
checks and the saved generator come from, and spectral norm in D (``model.spectral_norm``).
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
from catgan.model.augment import augment
from catgan.model.ema import GeneratorEMA
from catgan.model.losses import d_loss, g_loss, grad_norm, relativistic
from catgan.model.nets import build, sample
from catgan.progress import progress
from catgan.training import checkpoint
from catgan.training.codedeps import ROOT, closure
from catgan.training.distributed import Dist, describe, select_device
from catgan.training.monitor import Monitor
from catgan.training.outputs import COLUMNS, EPOCH_KEY, HISTORY_COLUMNS, STEP_KEY, TrainResult
from catgan.training.seeding import seed_everything
from catgan.training.tracker import NullTracker

log = logging.getLogger(__name__)

FIXED_SAMPLES = 64
# Imported by training but unable to move its trajectory: what it logs, writes and measures
# (the quality check is tested bit-exact). Editing them re-runs the stage, which then resumes the
# finished checkpoint at once; every other module the loop imports is hashed into its key.
# Package __init__ files hold docstrings only, and catgan/metrics/ only measures.
_NOT_SHAPING = {"catgan/" + name for name in (
    "config.py", "errors.py", "fileio.py", "images.py", "progress.py", "training/codedeps.py",
    "training/monitor.py", "training/outputs.py", "training/tracker.py")}
# The fixed latent has its own stream so that how batches are drawn never changes it.
_FIXED_SEED_OFFSET = 0x5EED
_NOISE_SEED_OFFSET = 0x2A7E
_RANK_SEED_STRIDE = 7919


class TrainingDiverged(UserError):
    pass


def training_hash(params: Params, data_hash: str) -> str:
    """What shapes the trajectory: params, data and the training code. Epochs are left out so
    that a finished run can be extended by raising train.epochs."""
    shaping = {k: v for k, v in dataclasses.asdict(params.train).items()
               if k not in ("epochs", "device", "threads", "channels_last", "log_every")}
    code = {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in shaping_code()}
    blob = json.dumps({"model": dataclasses.asdict(params.model), "train": shaping,
                       "data": data_hash, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@functools.cache
def shaping_code() -> tuple[str, ...]:
    """The project files, relative to the root, that the training loop's trajectory depends on."""
    files = (p.relative_to(ROOT).as_posix() for p in closure(Path(__file__)))
    return tuple(sorted(f for f in files
                        if f not in _NOT_SHAPING and not f.endswith("/__init__.py")
                        and not f.startswith("catgan/metrics/")))


def checkpoint_dir(root: Path, params: Params, data_hash: str) -> Path:
    """One folder per training configuration under ``root``, shared by every DVC experiment. Not a
    DVC output, so the stage stays in DVC's run cache and a killed queued or temp experiment
    resumes when it is run again."""
    name = f"{params.model.variant}-seed{params.train.seed}-{training_hash(params, data_hash)[:12]}"
    return root / "checkpoints" / name


@dataclass
class _Nets:
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    order: torch.Generator  # the data order: the same in every process
    noise: torch.Generator  # latents and augmentations: one stream per process
    dist: Dist
    ema: GeneratorEMA | None = None

    @property
    def shown(self) -> torch.nn.Module:
        """The generator that grids, quality checks and the saved models come from."""
        return self.ema.module if self.ema is not None else self.G


def train(params: Params, images: np.ndarray, data_hash: str, ckpt_dir: Path,
          tracker: NullTracker | None = None, dist: Dist | None = None,
          device: torch.device | None = None) -> TrainResult:
    """Train from scratch or resume from ``ckpt_dir/last.pt``; grids go to ``ckpt_dir/grids``.
    Under torchrun every process calls this; only the main one writes files and has a real tracker.
    """
    t, m = params.train, params.model
    tracker = tracker or NullTracker()
    dist = dist or Dist()
    device = device or select_device(t.device, dist.local_rank)
    steps = _steps_per_epoch(t, dist, device, len(images))
    seed_everything(t.seed, t.threads or max(1, (os.cpu_count() or 1) // dist.local_world))
    e = params.eval
    monitor = Monitor(images, every=e.every, samples=e.monitor_samples, seed=e.seed,
                      latent_dim=m.latent_dim, batch_size=e.batch_size, device=device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    nets = _networks(params, device, dist)
    fixed_gen = torch.Generator().manual_seed(t.seed + _FIXED_SEED_OFFSET)
    fixed_z = torch.randn(FIXED_SAMPLES, m.latent_dim, 1, 1, generator=fixed_gen).to(device)

    ckpt_path, grid_dir = ckpt_dir / "last.pt", ckpt_dir / "grids"
    key = training_hash(params, data_hash)
    result = TrainResult(nets.shown, nets.D)
    state = _resumable(checkpoint.load(ckpt_path), key, t.epochs, ckpt_path)
    _check_agreement(dist, key, state["epoch"] if state else 0, ckpt_path)
    if state:
        nets.G.load_state_dict(state["G"])
        nets.D.load_state_dict(state["D"])
        nets.opt_g.load_state_dict(state["opt_g"])
        nets.opt_d.load_state_dict(state["opt_d"])
        if nets.ema is not None:
            nets.ema.load_state_dict(state["G_ema"])
        checkpoint.restore_rng_state(state["rng"][dist.rank], nets.noise)
        nets.order.set_state(state["order"])
        fixed_z = state["fixed_z"].to(device)
        result.history, result.steps = state["history"], state["steps"]
        result.resumed_from = state["epoch"]
        log.info("resuming from %s at epoch %d", ckpt_path, state["epoch"])
    tags = {"device": describe(device), "data_images": len(images), "processes": dist.world}
    result.run_id = tracker.start(flatten(params), tags, run_id=state["run_id"] if state else None)
    if state:
        # A kill between an epoch's checkpoint and its MLflow calls lost them: log the checkpoint's
        # history again; the tracker skips every value the run already holds.
        tracker.log_rows(result.history, "epoch", HISTORY_COLUMNS[1:], prefix=EPOCH_KEY)
        tracker.log_rows(result.steps, "step", COLUMNS, prefix=STEP_KEY)
        if dist.main:
            _relog_grids(grid_dir, result.resumed_from, tracker)
    else:
        if dist.main:
            shutil.rmtree(grid_dir, ignore_errors=True)
        _save_grid(nets, fixed_z, grid_dir, 0, tracker)

    data = torch.from_numpy(np.array(images)).to(device)  # one copy: the memmap is read-only
    try:
        for epoch in range(result.resumed_from + 1, t.epochs + 1):
            row, step_rows = _epoch(nets, data, params, epoch, steps)
            nets.dist.average_batchnorm_statistics(nets.G)
            nets.dist.average_batchnorm_statistics(nets.D)
            if nets.ema is not None:
                nets.dist.average_batchnorm_statistics(nets.ema.module)
            if monitor.due(epoch):
                row.update(_quality(monitor, nets, epoch))
            result.history.append(row)
            result.steps.extend(step_rows)
            _save_grid(nets, fixed_z, grid_dir, epoch, tracker)
            rng = dist.gather(checkpoint.rng_state(nets.noise))
            if dist.main:
                checkpoint.save(ckpt_path, {
                    "train_hash": key, "epoch": epoch, "run_id": result.run_id,
                    "G": nets.G.state_dict(), "D": nets.D.state_dict(),
                    "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(),
                    "rng": rng, "order": nets.order.get_state(), "fixed_z": fixed_z.cpu(),
                    "history": result.history, "steps": result.steps,
                    **({"G_ema": nets.ema.state_dict()} if nets.ema is not None else {})})
            tracker.log_metrics({EPOCH_KEY + k: v for k, v in row.items() if k != "epoch"},
                                step=epoch)
            tracker.log_rows(step_rows, "step", COLUMNS, prefix=STEP_KEY)
            dist.barrier()  # no process starts an epoch whose predecessor is not on disk
    except BaseException:
        tracker.finish("FAILED")
        raise
    return result


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


def _networks(params: Params, device: torch.device, dist: Dist) -> _Nets:
    t, m = params.train, params.model
    # Same seed, so the same weights in every process.
    G, D = build(m.variant, m.latent_dim, m.init, m.spectral_norm)
    if t.sync_bn and dist.world > 1:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(net) for net in (G, D))
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=layout), D.to(device, memory_format=layout)
    ema = GeneratorEMA(G, t.ema) if t.ema else None  # before compiling: it samples only, eagerly
    if t.compile:
        G.compile()
        D.compile()
    noise_seed = t.seed + _NOISE_SEED_OFFSET + _RANK_SEED_STRIDE * dist.rank
    return _Nets(G, D, torch.optim.Adam(G.parameters(), lr=t.lr, betas=tuple(t.betas)),
                 torch.optim.Adam(D.parameters(), lr=t.lr, betas=tuple(t.betas)),
                 order=torch.Generator(device=device).manual_seed(t.seed),
                 noise=torch.Generator(device=device).manual_seed(noise_seed), dist=dist, ema=ema)


def _resumable(state: dict | None, key: str, epochs: int, path: Path) -> dict | None:
    if state is None:
        return None
    if state.get("train_hash") != key:
        log.warning("checkpoint %s was made with other params or data: starting fresh", path)
        return None
    if state["epoch"] > epochs:
        log.warning("checkpoint %s is at epoch %d, beyond train.epochs = %d: starting fresh",
                    path, state["epoch"], epochs)
        return None
    return state


def _epoch(nets: _Nets, data: torch.Tensor, params: Params, epoch: int, steps: int):
    """One pass; per-step values stay on the device until a ``log_every`` boundary."""
    t, dist = params.train, nets.dist
    nets.G.train()
    nets.D.train()
    perm = torch.randperm(data.shape[0], generator=nets.order, device=data.device)
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
        values[i] = _step(nets, real, params)
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


def _step(nets: _Nets, real: torch.Tensor, params: Params) -> torch.Tensor:
    """One D step then one G step, as in the course; returns COLUMNS as a device tensor."""
    G, D, dist, t = nets.G, nets.D, nets.dist, params.train
    latent, b = params.model.latent_dim, real.shape[0]
    # bf16 autocast keeps the weights, gradients and the BCE losses in float32.
    autocast = torch.autocast(real.device.type, dtype=torch.bfloat16,
                              enabled=t.precision == "bf16")

    def judge(images: torch.Tensor) -> torch.Tensor:  # D's logits, through DiffAugment when set
        return D(augment(images, t.augment, nets.noise) if t.augment else images)

    z = torch.randn(b, latent, 1, 1, generator=nets.noise, device=real.device)
    with autocast:
        real_logits = judge(real)
        with torch.no_grad():  # D's step needs G's images, not G's graph
            fake = G(z)
        fake_logits = judge(fake)
        loss_d = (d_loss(real_logits, fake_logits) if t.loss == "standard"
                  else relativistic(real_logits, fake_logits, t.loss))
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    dist.average_gradients(D)
    nets.opt_d.step()

    z = torch.randn(b, latent, 1, 1, generator=nets.noise, device=real.device)
    # G's step back-propagates through D for G's sake only: D's weight gradients would be zeroed
    # before D's next step anyway, so they are skipped (measured in benchmarks/README.md, g_step).
    D.requires_grad_(False)
    try:
        with autocast:
            if t.loss == "standard":
                loss_g = g_loss(judge(G(z)), t.g_loss)
            else:  # D's view of the reals after its step: G's loss compares the two
                real_now = judge(real)
                loss_g = relativistic(judge(G(z)), real_now, t.loss)
        nets.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        D.requires_grad_(True)
    dist.average_gradients(G)
    norm = grad_norm(G.parameters())
    nets.opt_g.step()
    if nets.ema is not None:
        nets.ema.update_parameters(G)
    return torch.stack([loss_d.detach(), loss_g.detach(),
                        torch.sigmoid(real_logits.detach().float()).mean(),
                        torch.sigmoid(fake_logits.detach().float()).mean(), norm.detach()])


def _quality(monitor: Monitor, nets: _Nets, epoch: int) -> dict[str, float]:
    started = time.perf_counter()
    values = monitor.measure(nets.shown, nets.D)
    if nets.dist.main:
        log.info("epoch %d quality: SWD x1e3 %.2f, D(real) %.3f, D(fake) %.3f, diversity %.2f "
                 "(%.1f s)", epoch, values["swd_avg"], values["fixed_real_score"],
                 values["fixed_fake_score"], values["diversity_ratio"], time.perf_counter() - started)
    return values


def _check_finite(values: np.ndarray, epoch: int, first: int) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        step, col = bad[0]
        raise TrainingDiverged(
            f"{COLUMNS[col]} became {values[step, col]} at epoch {epoch}, step {first + step + 1} "
            "of that epoch; the last good checkpoint is kept. Lower train.lr or try model.init: dcgan")


def _save_grid(nets: _Nets, fixed_z, grid_dir: Path, epoch: int, tracker: NullTracker) -> None:
    # sample() uses no RNG and restores BN statistics: the grid cannot change the trajectory.
    # Every process samples (SyncBatchNorm needs them all); only the main one writes.
    image = grid_image(sample(nets.shown, fixed_z))
    if nets.dist.main:
        save_png(image, grid_dir / f"epoch_{epoch:03d}.png")
        tracker.log_image(image, key="samples", step=epoch)


def _relog_grids(grid_dir: Path, last_epoch: int, tracker: NullTracker) -> None:
    """The saved grids again, for a run whose store missed some (the tracker skips the others)."""
    for epoch in range(last_epoch + 1):
        path = grid_dir / f"epoch_{epoch:03d}.png"
        if path.is_file():
            with Image.open(path) as image:
                tracker.log_image(image.convert("RGB"), key="samples", step=epoch)
