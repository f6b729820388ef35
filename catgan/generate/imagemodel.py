"""The generator as one model from latents to uint8 images: what MLflow logs and serves, and what
``catgan sample`` runs. Importing it builds nothing and touches no state.

BatchNorm layers keep no running statistics here, so they normalise with the batch's statistics
in any mode, as in training and as ``catgan.model.nets.sample``: each image depends on the whole batch
it was drawn in, and the same latents in the same batch give the same pixels.
"""
from __future__ import annotations

import torch
from torch import nn

from catgan.images import to_uint8
from catgan.model.nets import build

IMAGE_SHAPE = (3, 64, 64)


class LatentsToImages(nn.Module):
    """N x latent_dim float32 latents -> N x 3 x 64 x 64 uint8 images."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        for module in generator.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = False
                module.running_mean = module.running_var = module.num_batches_tracked = None
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generator(z.reshape(z.shape[0], -1, 1, 1)))  # a saved PNG's pixels


def from_state_dict(variant: str, latent_dim: int, state: dict) -> LatentsToImages:
    """``variant``'s generator with the weights ``state`` (a generator's state_dict), on the CPU.

    Raises RuntimeError or KeyError when the weights do not fit the variant and latent size.
    """
    generator, _ = build(variant, latent_dim, "default")
    generator.load_state_dict({k: v.detach().cpu() for k, v in state.items()})
    return LatentsToImages(generator).eval()


def signature(latent_dim: int):
    """MLflow's signature: a float32 latent batch in, a uint8 image batch out (-1: any batch)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, latent_dim))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *IMAGE_SHAPE))]))


def latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """``n`` x ``latent_dim`` standard normal latents, drawn on the CPU from ``seed`` alone."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
