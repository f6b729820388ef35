"""Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al. 2018, ProGAN).

Follows ProGAN's ``metrics/sliced_wasserstein.py``: 5x5 binomial pyramid with mirror edges,
random 7x7 neighbourhoods per image and level, descriptors normalised per colour channel,
sorted projections on random unit directions. All randomness comes from one seeded
``torch.Generator`` and is drawn up front (``draw_samples``) so a reference can reuse it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from catgan.errors import UserError

# The 5x5 kernel is outer([1, 4, 6, 4, 1]) / 256, applied separably.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


@dataclass(frozen=True)
class LevelSample:
    """Random draws for one pyramid level: patch centres (N x P x 2, as y, x) and directions."""

    real_centres: Tensor
    fake_centres: Tensor
    directions: Tensor  # repeats x descriptor_dim x dirs_per_repeat, unit columns


def check_image_batch(images: object, name: str, min_count: int = 1) -> None:
    """Raise UserError unless ``images`` is a uint8 N x 3 x H x W tensor with N >= min_count."""
    if not isinstance(images, Tensor):
        raise UserError(f"{name}: expected a torch.Tensor of images, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"{name}: expected uint8 images shaped N x 3 x H x W (values 0..255), got "
                        f"dtype {images.dtype} and shape {tuple(images.shape)}; quantise generated "
                        "images first, e.g. catgan.images.to_uint8")
    if images.shape[0] < min_count:
        raise UserError(f"{name}: needs at least {min_count} images, got {images.shape[0]}")


def pyramid_resolutions(size: int, min_resolution: int) -> list[int]:
    """Level sizes from ``size`` halving down to ``min_resolution``: 64, 16 -> [64, 32, 16]."""
    resolutions = []
    while size >= min_resolution:
        resolutions.append(size)
        size //= 2
    return resolutions


def _blur(images: Tensor, taps: Tensor, stride: int = 1) -> Tensor:
    """Separable 5x5 blur with ``taps`` per axis; ``stride`` 2 keeps only even rows and columns."""
    channels = images.shape[1]
    taps = taps.to(images)  # dtype and device
    # PyTorch's "reflect" is scipy's "mirror" (edge pixel not repeated), which ProGAN uses.
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    column = taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1)
    rows = F.conv2d(padded, column, stride=(stride, 1), groups=channels)
    return F.conv2d(rows, column.transpose(2, 3), stride=(1, stride), groups=channels)


def pyr_down(images: Tensor) -> Tensor:
    """Blur and keep every other row and column (cv2.pyrDown)."""
    return _blur(images, _BINOMIAL / 16.0, stride=2)


def pyr_up(images: Tensor) -> Tensor:
    """Insert zeros between pixels and blur with 4x the kernel (cv2.pyrUp)."""
    n, c, h, w = images.shape
    spread = images.new_zeros(n, c, 2 * h, 2 * w)
    spread[:, :, ::2, ::2] = images
    return _blur(spread, _BINOMIAL / 8.0)


def laplacian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    """Band-pass levels, finest first, then the low-pass level last (float32)."""
    pyramid = [images.to(torch.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def extract_descriptors(level: Tensor, centres: Tensor, patch_size: int) -> Tensor:
    """Patches around ``centres`` (N x P x 2) of an N x C x H x W level -> (N*P) x C x k x k."""
    n, c, h, w = level.shape
    radius = patch_size // 2
    offsets = torch.arange(-radius, radius + 1)
    # One flat index per patch element beats broadcasting four index tensors of full size.
    within = torch.arange(c)[:, None, None] * (h * w) + offsets[None, :, None] * w + offsets[None, None, :]
    corner = torch.arange(n)[:, None] * (c * h * w) + centres[..., 0] * w + centres[..., 1]
    index = corner.reshape(-1, 1, 1, 1) + within
    return level.reshape(-1)[index.to(level.device)]


def normalize_descriptors(desc: Tensor) -> Tensor:
    """Per-channel zero mean, unit std over the whole set, flattened to rows."""
    var, mean = torch.var_mean(desc, dim=(0, 2, 3), keepdim=True, correction=0)
    std = var.sqrt()
    # A perfectly flat level (e.g. blank images) has std 0; leave it at zero instead of NaN.
    desc = (desc - mean) / torch.where(std > 0, std, torch.ones_like(std))
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a: Tensor, b: Tensor, directions: Tensor) -> float:
    """Mean |sorted(a.d) - sorted(b.d)| over all rows, directions and repeats."""
    sorted_gap = _sorted_gap_numpy if a.device.type == "cpu" else _sorted_gap_torch
    per_repeat = [sorted_gap(dirs.T.to(a.device) @ a.T, dirs.T.to(a.device) @ b.T)
                  for dirs in directions]
    return float(np.mean(per_repeat))


def _sorted_gap_numpy(proj_a: Tensor, proj_b: Tensor) -> float:
    # numpy's in-place SIMD sort is ~10x faster than torch's CPU sort, which also builds indices.
    a, b = proj_a.numpy(), proj_b.numpy()
    a.sort(axis=1)
    b.sort(axis=1)
    return float(np.abs(a - b).mean(dtype=np.float64))


def _sorted_gap_torch(proj_a: Tensor, proj_b: Tensor) -> float:
    # On a GPU the sort stays on the device: the check then costs milliseconds, not seconds.
    gap = proj_a.sort(dim=1).values - proj_b.sort(dim=1).values
    return float(gap.abs().double().mean())


def draw_samples(n_real: int, n_fake: int, resolutions: list[int], *, seed: int, patches_per_image: int,
                 patch_size: int, dirs_per_repeat: int, repeats: int) -> list[LevelSample]:
    """All random draws of one SWD evaluation, one LevelSample per resolution, in a fixed order."""
    generator = torch.Generator().manual_seed(seed)
    radius, dim = patch_size // 2, 3 * patch_size * patch_size

    def centres(n_images: int, size: int) -> Tensor:  # the whole patch inside the level
        return torch.randint(radius, size - radius, (n_images, patches_per_image, 2),
                             generator=generator)

    samples = []
    for res in resolutions:
        real, fake = centres(n_real, res), centres(n_fake, res)
        dirs = torch.randn(repeats, dim, dirs_per_repeat, generator=generator)
        samples.append(LevelSample(real, fake, dirs / dirs.norm(dim=1, keepdim=True)))
    return samples


def swd(real: Tensor, fake: Tensor, *, seed: int, patches_per_image: int = 128, patch_size: int = 7,
        dirs_per_repeat: int = 128, repeats: int = 4, min_resolution: int = 16,
        device: torch.device | None = None) -> dict[str, float]:
    """Sliced Wasserstein distance x1e3 per pyramid level between uint8 image batches, on ``device``
    (default: the CPU): for 64x64 input ``swd_64``, ``swd_32``, ``swd_16`` (the low-pass level)
    and their mean ``swd_avg``."""
    check_image_batch(real, "real images")
    check_image_batch(fake, "fake images")
    if real.shape != fake.shape:
        raise UserError(f"SWD compares equally many images of one size, got real "
                        f"{tuple(real.shape)} and fake {tuple(fake.shape)}; pass the same number "
                        "of images of the same size (subsample the larger set)")
    size = real.shape[-1]
    if real.shape[-2] != size or size & (size - 1):
        raise UserError(f"SWD needs square power-of-two images, got {real.shape[-2]}x{size}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise UserError(f"SWD patch_size must be a positive odd number, got {patch_size}")
    if min_resolution < max(patch_size, 3) or size < min_resolution:
        raise UserError(f"SWD min_resolution={min_resolution} must be at least patch_size="
                        f"{patch_size} (and 3) and at most the image size {size}")
    counts = {"patches_per_image": patches_per_image, "dirs_per_repeat": dirs_per_repeat,
              "repeats": repeats}
    for key, value in counts.items():
        if value < 1:
            raise UserError(f"SWD {key} must be a positive integer, got {value}")
    samples = draw_samples(len(real), len(fake), pyramid_resolutions(size, min_resolution),
                           seed=seed, patch_size=patch_size, **counts)
    device = device or torch.device("cpu")
    with torch.no_grad():
        real_pyr = laplacian_pyramid(real.to(device), len(samples))
        fake_pyr = laplacian_pyramid(fake.to(device), len(samples))
        result = {}
        for real_level, fake_level, sample in zip(real_pyr, fake_pyr, samples):
            a = normalize_descriptors(extract_descriptors(real_level, sample.real_centres, patch_size))
            b = normalize_descriptors(extract_descriptors(fake_level, sample.fake_centres, patch_size))
            result[f"swd_{real_level.shape[-1]}"] = sliced_wasserstein(a, b, sample.directions) * 1e3
    result["swd_avg"] = sum(result.values()) / len(result)
    return result
