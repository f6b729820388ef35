"""The course's DCGAN training loop, as the course writes it, for the throughput comparison.

JPEG files through torchvision's ImageFolder and a 3-worker DataLoader, a discriminator ending in
Sigmoid scored with BCELoss, the course's train_discriminator / train_generator (the D step runs
backward through G too, as the course does not detach the fakes), a ``.item()`` host read after
every step and a sample grid saved after every epoch. The networks are catgan's, so both loops
train exactly the same layers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.utils import save_image

from catgan.errors import UserError
from catgan.models import build

STATS = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
WORKERS = 3
# The course's 3 workers on a 2-core machine draw a warning per epoch; the setting is the point.
warnings.filterwarnings("ignore", message="This DataLoader will create")


def make_loader(root: Path, batch_size: int, device: torch.device, image_size: int = 64) -> DataLoader:
    dataset = ImageFolder(str(root), transform=T.Compose([
        T.Resize(image_size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(*STATS),
    ]))
    # The course passes pin_memory=True everywhere; without an accelerator torch only warns and
    # skips it, so asking for it on CPU would change nothing but the log.
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=WORKERS,
                      pin_memory=device.type == "cuda", drop_last=True)


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
    fake_images = G(fixed_latent)
    save_image(fake_images * STATS[1][0] + STATS[0][0], out_dir / f"generated-images-{epoch:04d}.png",
               nrow=8)


def fit(image_root: Path, variant: str, batch_size: int, steps: int, device: torch.device,
        out_dir: Path, latent_size: int = 128, lr: float = 0.0002) -> list[tuple[float, ...]]:
    """Train for ``steps`` optimisation steps (epochs of the loader as needed); return their losses.

    Everything a course run pays for is inside: dataset scan, worker start-up, model build and
    the per-epoch sample grid.
    """
    loader = make_loader(image_root, batch_size, device)
    if len(loader) == 0:
        raise UserError(f"{image_root}: fewer images than one batch of {batch_size}; lower the batch size")
    G, D = networks(variant, latent_size, device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    fixed_latent = torch.randn(64, latent_size, 1, 1, device=device)
    history: list[tuple[float, ...]] = []
    epoch = 0
    while len(history) < steps:
        epoch += 1
        for real_images, _ in loader:
            real_images = real_images.to(device, non_blocking=True)
            loss_d, real_score, fake_score = train_discriminator(G, D, real_images, opt_d, criterion,
                                                                 latent_size, device)
            loss_g = train_generator(G, D, opt_g, criterion, batch_size, latent_size, device)
            history.append((loss_d, loss_g, real_score, fake_score))
            if len(history) == steps:
                break
        save_samples(G, fixed_latent, out_dir, epoch)
    return history
