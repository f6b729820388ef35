"""Quality while training: SWD, D scores and diversity on a fixed latent batch and real subset.

The same metrics as the evaluate stage, on fewer images (``eval.monitor_samples``) so that a
check costs a few percent of an epoch. Every draw comes from seeded generators of its own and
BatchNorm statistics are restored, so checking never changes the training trajectory.
"""
from __future__ import annotations

import numpy as np
import torch

from catgan.metrics.diversity import diversity_ratio
from catgan.metrics.evaluate import generate, mean_score, real_sets
from catgan.metrics.swd import swd
from catgan.training.outputs import QUALITY


class Monitor:
    def __init__(self, images: np.ndarray, *, every: int, samples: int, seed: int, latent_dim: int,
                 batch_size: int, device: torch.device):
        self.every, self.seed, self.latent_dim = every, seed, latent_dim
        self.batch_size, self.device = batch_size, device
        self.real = real_sets(images, samples, seed)[0] if every else None

    def due(self, epoch: int) -> bool:
        return bool(self.every) and epoch % self.every == 0

    def measure(self, G: torch.nn.Module, D: torch.nn.Module) -> dict[str, float]:
        fake = generate(G, len(self.real), self.latent_dim, seed=self.seed,
                        batch_size=self.batch_size, device=self.device)
        out = swd(self.real, fake, seed=self.seed, device=self.device)
        out["fixed_real_score"] = mean_score(D, self.real, batch_size=self.batch_size,
                                             device=self.device)
        out["fixed_fake_score"] = mean_score(D, fake, batch_size=self.batch_size, device=self.device)
        out["diversity_ratio"] = diversity_ratio(self.real, fake, seed=self.seed)["diversity_ratio"]
        return {k: out[k] for k in QUALITY}
