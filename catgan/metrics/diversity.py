"""Sample diversity: mean pairwise L2 distance of generated images relative to real ones.

A ratio far below 1 means the generator draws near-copies of a few images (mode collapse).
"""
from __future__ import annotations

import torch
from torch import Tensor

from catgan.errors import UserError
from catgan.metrics.swd import check_image_batch


def mean_pairwise_distance(images: Tensor, max_pairs: int, generator: torch.Generator) -> float:
    """Mean L2 distance between images taken as floats in [0, 1]: over all unordered pairs if
    there are at most ``max_pairs``, else over ``max_pairs`` random pairs of distinct images."""
    n = len(images)
    if n * (n - 1) // 2 <= max_pairs:
        first, second = torch.triu_indices(n, n, offset=1)
    else:
        first = torch.randint(0, n, (max_pairs,), generator=generator)
        # Shifting by 1..n-1 (mod n) never pairs an image with itself.
        second = (first + torch.randint(1, n, (max_pairs,), generator=generator)) % n
    flat = images.reshape(n, -1).cpu()
    diffs = (flat[first].double() - flat[second].double()) / 255.0
    return float(diffs.norm(dim=1).mean())


def diversity_ratio(real: Tensor, fake: Tensor, *, max_pairs: int = 500, seed: int) -> dict[str, float]:
    """Mean pairwise distance of ``fake`` over that of ``real`` (uint8 N x 3 x H x W batches)."""
    check_image_batch(real, "real images", min_count=2)
    check_image_batch(fake, "fake images", min_count=2)
    if max_pairs < 1:
        raise UserError(f"diversity: max_pairs must be a positive integer, got {max_pairs}")
    generator = torch.Generator().manual_seed(seed)
    diversity_real = mean_pairwise_distance(real, max_pairs, generator)
    diversity_fake = mean_pairwise_distance(fake, max_pairs, generator)
    if diversity_real == 0.0:
        raise UserError("diversity: every sampled pair of real images is identical, so there is no real "
                        "diversity to compare against; check the preprocessed data set")
    return {"diversity_real": diversity_real, "diversity_fake": diversity_fake,
            "diversity_ratio": diversity_fake / diversity_real}


def collapse_warning(ratio: float, threshold: float = 0.5) -> str | None:
    """A human-readable warning when generated images are far less varied than real ones, else None."""
    if ratio >= threshold:
        return None
    return (f"possible mode collapse: generated images are only {ratio:.2f}x as varied as real ones "
            f"(mean pairwise pixel distance; warning below {threshold:.2f}). Inspect the sample grids.")
