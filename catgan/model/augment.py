"""DiffAugment (Zhao et al. 2020): random colour, translation and cutout on every batch D sees.

Real and fake batches get the same kinds of change, drawn afresh for each batch, in D's step and
in G's: D can no longer memorise a small training set, and since each change is plain tensor
arithmetic and indexing, G still learns through it. Every random value comes from the generator
passed in (training's noise generator): the same seed gives the same changes. Written here rather
than taken from kornia, which is no faster on a step (benchmarks/README.md, recipe cost).

Images are in [-1, 1] as D sees them; as in the paper's code, colour changes are not clipped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATION = 1 / 8  # the largest shift, as a share of the image side (the paper's)
CUTOUT = 1 / 2  # the side of the square cut out, as a share of the image side (the paper's)


def brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image plus its own shift (one value per image)."""
    return x + shift.view(-1, 1, 1, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance from its grey (the mean over channels) scaled by the image's factor."""
    grey = x.mean(dim=1, keepdim=True)
    return (x - grey) * factor.view(-1, 1, 1, 1) + grey


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Each image's distance from its mean scaled by its factor."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor.view(-1, 1, 1, 1) + mean


def translate(x: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Image i moved ``down[i]`` rows and ``right[i]`` columns, zeros where nothing moved in."""
    n, _, h, w = x.shape
    # Indices into x padded by one zero on each side: a source outside the image reads the pad.
    rows = torch.arange(1, h + 1, device=x.device).view(1, h, 1) - down.view(-1, 1, 1)
    cols = torch.arange(1, w + 1, device=x.device).view(1, 1, w) - right.view(-1, 1, 1)
    rows, cols = rows.clamp_(0, h + 1), cols.clamp_(0, w + 1)
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    # Gathered as N x H x W x C, the layout of a channels_last batch: whole pixels at a time.
    return F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Image i with the ``size`` x ``size`` square from (top[i], left[i]) set to 0 (clipped to
    the image)."""
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device) - top.view(-1, 1)
    cols = torch.arange(w, device=x.device) - left.view(-1, 1)
    inside = ((rows >= 0) & (rows < size)).unsqueeze(2) & ((cols >= 0) & (cols < size)).unsqueeze(1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _uniform(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    x = brightness(x, _uniform(x, gen) - 0.5)
    x = saturation(x, _uniform(x, gen) * 2)
    return contrast(x, _uniform(x, gen) + 0.5)


def _translation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dh, dw = int(h * TRANSLATION + 0.5), int(w * TRANSLATION + 0.5)
    down = torch.randint(-dh, dh + 1, (n,), generator=gen, device=x.device)
    right = torch.randint(-dw, dw + 1, (n,), generator=gen, device=x.device)
    return translate(x, down, right)


def _cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    size = int(h * CUTOUT + 0.5)
    # The square's centre anywhere in the image, so it is clipped at the edges as often as not.
    top = torch.randint(0, h + 1 - size % 2, (n,), generator=gen, device=x.device) - size // 2
    left = torch.randint(0, w + 1 - size % 2, (n,), generator=gen, device=x.device) - size // 2
    return cutout(x, top, left, size)


# The names, in the order DiffAugment lists them: config.AUGMENTS.
POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout}


def augment(x: torch.Tensor, policy: str, gen: torch.Generator,
            p: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` through each policy of the comma-separated ``policy``, in order, in x's memory
    layout; random values are drawn from ``gen``, on x's device. ``p`` (train.augment_p, a 0-dim
    tensor): each policy changes each image with that probability, as ADA applies its
    augmentations; None: every image, every policy (DiffAugment's p = 1)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for name in policy.split(","):
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r}; params.yaml is checked by "
                             "catgan.config")
        changed = POLICIES[name](x, gen)
        if p is None:
            x = changed
        else:
            chosen = torch.rand(x.shape[0], generator=gen, device=x.device) < p
            x = torch.where(chosen.view(-1, 1, 1, 1), changed, x)
    return x.contiguous(memory_format=layout)
