"""Image grids: the course's 8x8 sample sheets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.fileio import atomic_path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 pixels, as a saved PNG would hold them."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def grid_image(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """An RGB sheet of uint8 N x 3 x H x W images (or floats in [-1, 1]), ``nrow`` per row."""
    # torchvision's make_grid layout (2 px white padding), without importing torchvision: that
    # import costs every stage about 2 s of start-up.
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    pixels = images.cpu().permute(0, 2, 3, 1).numpy()
    n, h, w, c = pixels.shape
    cols, pad = min(nrow, n), 2
    rows = -(-n // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, image in enumerate(pixels):
        y, x = divmod(i, cols)
        sheet[pad + y * (h + pad):(y + 1) * (h + pad), pad + x * (w + pad):(x + 1) * (w + pad)] = image
    return Image.fromarray(sheet)


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
