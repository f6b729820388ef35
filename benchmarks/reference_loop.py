"""The course's DCGAN training loop, as the course writes it: for the throughput comparison and for
the GPU study's parity runs (``study_train``).

JPEG files through torchvision's ImageFolder and a 3-worker DataLoader, a discriminator ending in
Sigmoid scored with BCELoss, the course's train_discriminator / train_generator (the D step runs
backward through G too, as the course does not detach the fakes), a ``.item()`` host read after
every step and a sample grid saved after every epoch. The networks are catgan's, so both loops
train exactly the same layers. Where torchvision is missing (the GPU study's machine),
``array_loader`` gives the same batches from catgan's prepared uint8 array.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from catgan.config import Params
from catgan.errors import UserError
from catgan.images import grid_image, save_png
from catgan.model.losses import grad_norm
from catgan.model.nets import build, sample
from catgan.study.standalone import Job
from catgan.training.outputs import COLUMNS

STATS = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
WORKERS = 3
FIXED_SAMPLES = 64
# The course's 3 workers on a 2-core machine draw a warning per epoch; the setting is the point.
warnings.filterwarnings("ignore", message="This DataLoader will create")


class ArrayImages(Dataset):
    """Prepared uint8 3 x S x S images as ToTensor + Normalize(STATS) gives them, labelled 0."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(np.array(images))  # a writable copy of a read-only memmap
        self.mean = torch.tensor(STATS[0]).view(3, 1, 1)
        self.std = torch.tensor(STATS[1]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div(255).sub(self.mean).div(self.std), 0


def _loader(dataset: Dataset, batch_size: int, device: torch.device) -> DataLoader:
    # The course passes pin_memory=True everywhere; without an accelerator torch only warns and
    # skips it, so asking for it on CPU would change nothing but the log.
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=WORKERS,
                      pin_memory=device.type == "cuda", drop_last=True)


def make_loader(root: Path, batch_size: int, device: torch.device, image_size: int = 64) -> DataLoader:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    return _loader(ImageFolder(str(root), transform=T.Compose([
        T.Resize(image_size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(*STATS),
    ])), batch_size, device)


def array_loader(images: np.ndarray, batch_size: int, device: torch.device) -> DataLoader:
    """The course's loader over catgan's prepared array instead of the JPEG files."""
    return _loader(ArrayImages(images), batch_size, device)


def networks(variant: str, latent_dim: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """catgan's G and D, with the course's final Sigmoid on D (catgan's D returns logits)."""
    generator, discriminator = build(variant, latent_dim, "default")
    return generator.to(device), nn.Sequential(discriminator, nn.Sigmoid()).to(device)


def train_discriminator(G, D, real_images, opt_d, criterion, latent_size: int, device):
    opt_d.zero_grad()
    real_preds = D(real_images)
    real_targets = torch.ones(real_images.size(0), device=device)
    real_loss = criterion(real_preds, real_targets)
    real_score = torch.mean(real_preds).item()

    latent = torch.randn(real_images.size(0), latent_size, 1, 1, device=device)
    fake_images = G(latent)
    fake_targets = torch.zeros(fake_images.size(0), device=device)
    fake_preds = D(fake_images)
    fake_loss = criterion(fake_preds, fake_targets)
    fake_score = torch.mean(fake_preds).item()

    loss = real_loss + fake_loss
    loss.backward()
    opt_d.step()
    return loss.item(), real_score, fake_score


def train_generator(G, D, opt_g, criterion, batch_size: int, latent_size: int, device):
    opt_g.zero_grad()
    latent = torch.randn(batch_size, latent_size, 1, 1, device=device)
    fake_images = G(latent)
    preds = D(fake_images)
    targets = torch.ones(batch_size, device=device)
    loss = criterion(preds, targets)
    loss.backward()
    opt_g.step()
    return loss.item()


def save_samples(G, fixed_latent, out_dir: Path, epoch: int) -> None:
    from torchvision.utils import save_image

    fake_images = G(fixed_latent)
    save_image(fake_images * STATS[1][0] + STATS[0][0], out_dir / f"generated-images-{epoch:04d}.png",
               nrow=8)


@dataclass
class Course:
    """The course's networks, loss, optimisers and fixed sample latent."""

    G: nn.Module
    D: nn.Module  # ends in Sigmoid; D[0] is catgan's discriminator, returning logits
    criterion: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    fixed_latent: torch.Tensor
    latent_size: int


def setup(variant: str, latent_size: int, lr: float, device: torch.device) -> Course:
    """Networks, BCELoss, Adam(lr, betas 0.5, 0.999) and the fixed latent, drawn in the course's order."""
    G, D = networks(variant, latent_size, device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    fixed_latent = torch.randn(FIXED_SAMPLES, latent_size, 1, 1, device=device)
    return Course(G, D, criterion, opt_g, opt_d, fixed_latent, latent_size)


def train(course: Course, loader: DataLoader, steps: int, device: torch.device,
          on_step: Callable[[int, tuple[float, ...]], None] | None = None,
          on_epoch: Callable[[int], None] | None = None) -> list[tuple[float, ...]]:
    """``steps`` optimisation steps, epochs of ``loader`` as needed; per step (loss_d, loss_g,
    real_score, fake_score). ``on_step(epoch, values)`` follows every step, ``on_epoch(epoch)``
    every epoch, the last one cut short included."""
    if len(loader) == 0:
        raise UserError(f"fewer images than one batch of {loader.batch_size}; lower the batch size")
    c = course
    history: list[tuple[float, ...]] = []
    epoch = 0
    while len(history) < steps:
        epoch += 1
        for real_images, _ in loader:
            real_images = real_images.to(device, non_blocking=True)
            loss_d, real_score, fake_score = train_discriminator(c.G, c.D, real_images, c.opt_d,
                                                                 c.criterion, c.latent_size, device)
            loss_g = train_generator(c.G, c.D, c.opt_g, c.criterion, loader.batch_size,
                                     c.latent_size, device)
            history.append((loss_d, loss_g, real_score, fake_score))
            if on_step:
                on_step(epoch, history[-1])
            if len(history) == steps:
                break
        if on_epoch:
            on_epoch(epoch)
    return history


def fit(image_root: Path, variant: str, batch_size: int, steps: int, device: torch.device,
        out_dir: Path, latent_size: int = 128, lr: float = 0.0002) -> list[tuple[float, ...]]:
    """Train for ``steps`` optimisation steps (epochs of the loader as needed); return their losses.

    Everything a course run pays for is inside: dataset scan, worker start-up, model build and
    the per-epoch sample grid.
    """
    loader = make_loader(image_root, batch_size, device)
    if len(loader) == 0:
        raise UserError(f"{image_root}: fewer images than one batch of {batch_size}; lower the batch size")
    course = setup(variant, latent_size, lr, device)
    return train(course, loader, steps, device,
                 on_epoch=lambda epoch: save_samples(course.G, course.fixed_latent, out_dir, epoch))


def study_train(job: Job, params: Params, images: np.ndarray, device: torch.device, grids: Path):
    """The course's loop for ``job.steps`` steps from torch.manual_seed(seed), as a trainer of the
    GPU study's parity runs (catgan.study.standalone.run_one)."""
    t, m = params.train, params.model
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    torch.backends.cudnn.benchmark = False  # the course leaves cuDNN autotuning off
    torch.manual_seed(job.seed)
    loader = array_loader(images, t.batch_size, device)
    course = setup(m.variant, m.latent_dim, t.lr, device)
    rows: list[dict] = []
    norms: list[torch.Tensor] = []  # kept on the device: the course's own host reads are enough

    def on_step(epoch: int, values: tuple[float, ...]) -> None:
        rows.append({"step": len(rows) + 1, "epoch": epoch, **dict(zip(COLUMNS, values))})
        norms.append(grad_norm(course.G.parameters()))  # G's gradients of the step just taken

    def on_epoch(epoch: int) -> None:
        save_png(grid_image(sample(course.G, course.fixed_latent)), grids / f"epoch_{epoch:03d}.png")

    on_epoch(0)
    train(course, loader, job.steps, device, on_step=on_step, on_epoch=on_epoch)
    for row, norm in zip(rows, torch.stack(norms).tolist()):
        row["g_grad_norm"] = norm
        row["augment_p"] = 0.0  # the course never augments
    history = [{"epoch": e, **{c: float(np.mean([r[c] for r in rows if r["epoch"] == e]))
                               for c in COLUMNS}} for e in sorted({r["epoch"] for r in rows})]
    # Scored like catgan's: D's logits, without the course's final Sigmoid.
    return course.G, course.D[0], history, [r for r in rows if r["step"] % t.log_every == 0], {
        "loss": "non_saturating", "epochs": rows[-1]["epoch"], "steps": len(rows),
        "images_seen": len(rows) * t.batch_size, "precision": "fp32", "compile": False,
        "loop": "course (benchmarks/reference_loop.py)"}
