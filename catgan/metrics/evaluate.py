"""The evaluate stage: measured, offline-capable quality numbers for a trained generator.

Real and generated sets are the same size, so SWD against the real-vs-real floor is a fair
comparison: both are estimated from equally many images.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from catgan.config import Params
from catgan.images import to_uint8
from catgan.metrics.diversity import collapse_warning, diversity_ratio
from catgan.metrics.inception import inception_metrics
from catgan.metrics.swd import swd
from catgan.model.nets import batch_statistics, sample

log = logging.getLogger(__name__)


def generate(G: torch.nn.Module, n: int, latent_dim: int, *, seed: int, batch_size: int,
             device: torch.device) -> torch.Tensor:
    """``n`` uint8 samples; the latent is drawn on the CPU so every device sees the same one."""
    z = torch.randn(n, latent_dim, 1, 1, generator=torch.Generator().manual_seed(seed))
    return torch.cat([to_uint8(sample(G, chunk.to(device))) for chunk in z.split(batch_size)])


def mean_score(D: torch.nn.Module, images: torch.Tensor, *, batch_size: int,
               device: torch.device) -> float:
    """Mean sigmoid(D(x)) over uint8 images of one kind, batch by batch as in training: the
    course's real/fake "accuracy"."""
    total = torch.zeros((), dtype=torch.float64)
    with batch_statistics(D):
        for chunk in images.split(batch_size):
            x = chunk.to(device).float().div_(127.5).sub_(1)
            total += torch.sigmoid(D(x)).double().sum().cpu()
    return float(total / len(images))


def real_sets(images: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint, seeded draws of ``n`` real images (fewer when the set is small)."""
    m = min(n, len(images) // 2)
    order = np.random.default_rng(seed).permutation(len(images))
    return tuple(torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)]))
                 for idx in (order[:m], order[m:2 * m]))


def evaluate(params: Params, G: torch.nn.Module, D: torch.nn.Module, images: np.ndarray,
             device: torch.device) -> tuple[dict, dict]:
    """Returns (metrics: nested numbers for eval.json, notes: text for logs and tags)."""
    e = params.eval
    real, real_other = real_sets(images, e.num_samples, e.seed)
    fake = generate(G, len(real), params.model.latent_dim, seed=e.seed, batch_size=e.batch_size,
                    device=device)
    metrics: dict = {
        "num_samples": len(real),
        "swd": swd(real, fake, seed=e.seed, device=device),
        "swd_real_floor": swd(real, real_other, seed=e.seed, device=device),
        "scores": {
            "real": mean_score(D, real, batch_size=e.batch_size, device=device),
            "fake": mean_score(D, fake, batch_size=e.batch_size, device=device),
        },
        "diversity": diversity_ratio(real, fake, seed=e.seed),
    }
    notes = {}
    inception = inception_metrics(real, fake, weights=e.inception_weights,
                                  batch_size=e.batch_size, kid_subset_size=e.kid_subset_size)
    if inception["status"] == "ok":
        metrics["inception"] = {"computed": 1, "fid": inception["fid"],
                                "kid_mean": inception["kid_mean"], "kid_std": inception["kid_std"]}
    else:
        metrics["inception"] = {"computed": 0}
        notes["fid"] = f"skipped: {inception['reason']}"
    warning = collapse_warning(metrics["diversity"]["diversity_ratio"])
    if warning:
        log.warning(warning)
        notes["collapse"] = warning
    return metrics, notes
