"""``catgan sample``: new images from a trained generator, a latent walk, the nearest-neighbour check.

Images are drawn with batch statistics, as training draws them: each image depends on the whole
batch it is drawn in. The same source, seed and count give the same pixels.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.fileio import atomic_path
from catgan.generate.imagemodel import latents
from catgan.generate.trained import Trained
from catgan.images import grid_image, save_png

_NEAREST_CHUNK = 1024  # training images compared at once: 100 MB of float64


def draw(trained: Trained, n: int, seed: int) -> torch.Tensor:
    """``n`` uint8 images from the latents of ``seed``, as one batch."""
    return trained.images(latents(n, trained.latent_dim, seed))


def write_pngs(images: torch.Tensor, out: Path) -> list[Path]:
    paths = [out / f"sample_{i:03d}.png" for i in range(len(images))]
    for image, path in zip(images, paths):
        save_png(Image.fromarray(image.permute(1, 2, 0).numpy()), path)
    return paths


def write_grid(images: torch.Tensor, path: Path) -> Path:
    save_png(grid_image(images, nrow=math.ceil(math.sqrt(len(images)))), path)
    return path


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, row by row, at fractions ``t``: (n, d), (n, d), (k,) -> (n, k, d).

    A Gaussian latent's mass lies near a sphere; a straight line between two samples cuts inside
    it, where the generator saw no latents, so its midpoints come out faded.
    """
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1))
    omega = torch.arccos(cos.clamp(-1, 1))[:, None, None]
    t = t.double()[None, :, None]
    sin = torch.sin(omega)
    # Nearly parallel endpoints: sin(omega) ~ 0, where the straight line is the same path.
    straight = sin.abs() < 1e-6
    wa = torch.where(straight, 1 - t, torch.sin((1 - t) * omega) / torch.where(straight, 1, sin))
    wb = torch.where(straight, t, torch.sin(t * omega) / torch.where(straight, 1, sin))
    return (wa * a64[:, None] + wb * b64[:, None]).float()


def interpolate(trained: Trained, n: int, steps: int, seed: int) -> list[Image.Image]:
    """``steps`` frames, each a row of ``n`` walks from one seeded latent to another; all
    ``n * steps`` images are one batch, so the batch statistics do not jump between frames."""
    ends = latents(2 * n, trained.latent_dim, seed)
    walk = slerp(ends[:n], ends[n:], torch.linspace(0, 1, steps))
    images = trained.images(walk.reshape(n * steps, -1))
    images = images.reshape(n, steps, *images.shape[1:])
    return [grid_image(images[:, k], nrow=min(n, 8)) for k in range(steps)]


def write_gif(frames: list[Image.Image], path: Path, fps: float) -> Path:
    with atomic_path(path, suffix=".gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=round(1000 / fps), loop=0)
    return path


def nearest(samples: torch.Tensor, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the index of the training image nearest in pixel L2 and that distance as RMS
    per pixel value (0 to 255), computed exactly in float64."""
    flat = samples.reshape(len(samples), -1).double()
    best = torch.full((len(samples),), math.inf, dtype=torch.float64)
    index = torch.zeros(len(samples), dtype=torch.long)
    for start in range(0, len(train), _NEAREST_CHUNK):
        chunk = torch.from_numpy(np.array(train[start:start + _NEAREST_CHUNK]))  # off the memmap
        chunk = chunk.reshape(len(chunk), -1).double()
        dist = (flat ** 2).sum(1)[:, None] + (chunk ** 2).sum(1)[None, :] - 2 * flat @ chunk.T
        value, at = dist.min(dim=1)
        better = value < best
        best[better], index[better] = value[better], at[better] + start
    return index.numpy(), (best.clamp(min=0) / flat.shape[1]).sqrt().numpy()


def write_nearest(samples: torch.Tensor, train: np.ndarray, data: str,
                  path: Path) -> tuple[Path, str]:
    """The sheet of pairs, four to a row: each sample, then its nearest image in ``train`` (read
    from ``data``); and a line on how near they are."""
    index, rms = nearest(samples, train)
    pairs = torch.stack([samples, torch.from_numpy(np.ascontiguousarray(train[index]))], dim=1)
    save_png(grid_image(pairs.reshape(-1, *samples.shape[1:]), nrow=8), path)
    return path, (f"nearest training image ({len(train)} in {data}): RMS pixel distance min "
                  f"{rms.min():.1f}, median {float(np.median(rms)):.1f}, max {rms.max():.1f} "
                  "(0-255 scale; near 0 would be a copy)")
