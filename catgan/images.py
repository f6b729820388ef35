"""Image grids: the course's 8x8 sample sheets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from catgan.fileio import atomic_path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 pixels, as a saved PNG would hold them."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def grid_image(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """An RGB sheet of uint8 N x 3 x H x W images (or floats in [-1, 1]), ``nrow`` per row."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    grid = make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=255)
    return Image.fromarray(np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
