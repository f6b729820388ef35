"""The course's DCGAN training loop, made exact: epoch means, fixed-latent grids, bit-exact resume.

Per batch: one D step (real -> 1, fake -> 0, loss = sum of both), then one G step on a fresh
latent batch. Per-step values stay on the device and are read once every ``train.log_every``
steps, so the loop does not wait on the host after every step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from catgan import checkpoint
from catgan.config import Params, flatten
from catgan.errors import UserError
from catgan.images import grid_image, save_png
from catgan.losses import d_loss, g_loss, grad_norm
from catgan.models import build, sample
from catgan.tracking import NullTracker, run_tags

log = logging.getLogger(__name__)

COLUMNS = ("loss_d", "loss_g", "real_score", "fake_score", "g_grad_norm")
FIXED_SAMPLES = 64
_HERE = Path(__file__).parent
_CODE = ("train.py", "models.py", "losses.py", "checkpoint.py")
# The fixed latent has its own stream so that how batches are drawn never changes it.
_FIXED_SEED_OFFSET = 0x5EED


class TrainingDiverged(UserError):
    pass


@dataclass
class TrainResult:
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    history: list[dict] = field(default_factory=list)  # one row per epoch: means over its steps
    steps: list[dict] = field(default_factory=list)  # one row every train.log_every steps
    run_id: str | None = None
    resumed_from: int = 0


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def training_hash(params: Params, data_hash: str) -> str:
    """What shapes the trajectory: params, data and the training code.

    Epochs are left out so that a finished run can be extended by raising train.epochs.
    """
    shaping = {k: v for k, v in dataclasses.asdict(params.train).items()
               if k not in ("epochs", "device", "threads", "channels_last", "log_every")}
    code = {name: hashlib.sha256((_HERE / name).read_bytes()).hexdigest() for name in _CODE}
    blob = json.dumps({"model": dataclasses.asdict(params.model), "train": shaping,
                       "data": data_hash, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def checkpoint_dir(root: Path, params: Params, data_hash: str) -> Path:
    """One folder per training configuration under ``root``, shared by every DVC experiment.

    It is not a DVC output, so the stage stays in DVC's run cache, and a killed queued or temp
    experiment resumes when it is run again.
    """
    name = f"{params.model.variant}-seed{params.train.seed}-{training_hash(params, data_hash)[:12]}"
    return root / "checkpoints" / name


def seed_everything(seed: int, threads: int) -> None:
    # Results are bit-identical across CPU runs only with the thread count pinned.
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train(params: Params, images: np.ndarray, data_hash: str, ckpt_dir: Path,
          tracker: NullTracker | None = None) -> TrainResult:
    """Train from scratch or resume from ``ckpt_dir/last.pt``; grids go to ``ckpt_dir/grids``."""
    t, m = params.train, params.model
    tracker = tracker or NullTracker()
    device = select_device(t.device)
    seed_everything(t.seed, t.threads)
    G, D = build(m.variant, m.latent_dim, m.init)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=layout), D.to(device, memory_format=layout)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=tuple(t.betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=tuple(t.betas))
    gen = torch.Generator(device=device).manual_seed(t.seed)
    fixed_z = torch.randn(FIXED_SAMPLES, m.latent_dim, 1, 1,
                          generator=torch.Generator().manual_seed(t.seed + _FIXED_SEED_OFFSET))
    fixed_z = fixed_z.to(device)

    ckpt_path, grid_dir = ckpt_dir / "last.pt", ckpt_dir / "grids"
    key = training_hash(params, data_hash)
    result = TrainResult(G, D)
    state = _resumable(checkpoint.load(ckpt_path), key, t.epochs, ckpt_path)
    if state:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        checkpoint.restore_rng_state(state["rng"], gen)
        fixed_z = state["fixed_z"].to(device)
        result.history, result.steps = state["history"], state["steps"]
        result.resumed_from = state["epoch"]
        log.info("resuming from %s at epoch %d", ckpt_path, state["epoch"])
    result.run_id = tracker.start(flatten(params), run_tags(params, data_hash),
                                  run_id=state["run_id"] if state else None)
    if not state:
        shutil.rmtree(grid_dir, ignore_errors=True)
        _save_grid(G, fixed_z, grid_dir, 0, tracker)

    data = torch.from_numpy(np.array(images)).to(device)  # one copy: the memmap is read-only
    n = data.shape[0]
    steps = math.ceil(n / t.batch_size)
    steps = min(steps, t.steps_per_epoch) if t.steps_per_epoch else steps
    try:
        for epoch in range(result.resumed_from + 1, t.epochs + 1):
            row, step_rows = _epoch(G, D, opt_g, opt_d, data, gen, params, epoch, steps)
            result.history.append(row)
            result.steps.extend(step_rows)
            _save_grid(G, fixed_z, grid_dir, epoch, tracker)
            checkpoint.save(ckpt_path, {
                "train_hash": key, "epoch": epoch, "run_id": result.run_id,
                "G": G.state_dict(), "D": D.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "rng": checkpoint.rng_state(gen), "fixed_z": fixed_z.cpu(),
                "history": result.history, "steps": result.steps})
            tracker.log_metrics({k: row[k] for k in COLUMNS}, step=epoch)
            tracker.log_rows(step_rows, "step", COLUMNS, prefix="step_")
    except BaseException:
        tracker.finish("FAILED")
        raise
    return result


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


def _epoch(G, D, opt_g, opt_d, data, gen, params: Params, epoch: int, steps: int):
    t = params.train
    G.train()
    D.train()
    perm = torch.randperm(data.shape[0], generator=gen, device=data.device)
    values = torch.zeros(steps, len(COLUMNS), device=data.device)
    first_step = (epoch - 1) * steps
    step_rows, read = [], 0
    bar = tqdm(range(steps), desc=f"epoch {epoch}/{t.epochs}", leave=False, dynamic_ncols=True)
    for i in bar:
        real = data[perm[i * t.batch_size:(i + 1) * t.batch_size]].float().div_(127.5).sub_(1)
        if t.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        values[i] = _step(G, D, opt_g, opt_d, real, gen, params)
        if (i + 1) % t.log_every == 0 or i + 1 == steps:
            host = values[read:i + 1].cpu().numpy()
            _check_finite(host, epoch, read)
            for j in range(read, i + 1):
                if (j + 1) % t.log_every == 0:
                    step_rows.append({"step": first_step + j + 1, "epoch": epoch,
                                      **dict(zip(COLUMNS, host[j - read].tolist()))})
            bar.set_postfix({c: f"{v:.3f}" for c, v in zip(COLUMNS[:4], host[-1])})
            read = i + 1
    means = values.mean(dim=0).tolist()
    row = {"epoch": epoch, **dict(zip(COLUMNS, means))}
    log.info("epoch %d: %s", epoch, ", ".join(f"{c} {row[c]:.4f}" for c in COLUMNS))
    return row, step_rows


def _step(G, D, opt_g, opt_d, real: torch.Tensor, gen: torch.Generator, params: Params):
    latent = params.model.latent_dim
    b = real.shape[0]
    z = torch.randn(b, latent, 1, 1, generator=gen, device=real.device)
    real_logits = D(real)
    fake_logits = D(G(z).detach())
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    z = torch.randn(b, latent, 1, 1, generator=gen, device=real.device)
    loss_g = g_loss(D(G(z)), params.train.g_loss)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    norm = grad_norm(G.parameters())
    opt_g.step()
    return torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(real_logits.detach()).mean(),
                        torch.sigmoid(fake_logits.detach()).mean(), norm.detach()])


def _check_finite(values: np.ndarray, epoch: int, first: int) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        step, col = bad[0]
        raise TrainingDiverged(
            f"{COLUMNS[col]} became {values[step, col]} at epoch {epoch}, step {first + step + 1} "
            "of that epoch; the last good checkpoint is kept. Lower train.lr or try model.init: dcgan")


def _save_grid(G, fixed_z, grid_dir: Path, epoch: int, tracker: NullTracker) -> None:
    # sample() uses no RNG and restores BN statistics: the grid cannot change the trajectory.
    image = grid_image(sample(G, fixed_z))
    save_png(image, grid_dir / f"epoch_{epoch:03d}.png")
    tracker.log_image(image, key="samples", step=epoch)

