"""GAN losses on discriminator logits, and the pair of them that ``train.loss`` names (``GAN_LOSSES``).

BCE-with-logits is the course's Sigmoid + BCELoss folded into one op: same values, but it stays
finite for large logits and autocast keeps it in float32 under mixed precision.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(real -> 1) + BCE(fake -> 0), each averaged over its batch."""
    real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_loss + fake_loss


def g_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """``non_saturating`` maximises log D(G(z)); ``saturating`` minimises log(1 - D(G(z))), the
    original minimax form, whose gradient vanishes when D confidently rejects the fakes."""
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "saturating":
        # BCE(l -> 0) = -log(1 - sigmoid(l)), so its negation is log(1 - D(G(z))).
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    raise ValueError(f"unknown generator loss {kind!r}; params.yaml is checked by catgan.config")


def relativistic(first_logits: torch.Tensor, second_logits: torch.Tensor,
                 kind: str) -> torch.Tensor:
    """The relativistic average losses of Jolicoeur-Martineau (2018): the first batch must look more
    real than the second does on average, and the second less real than the first. D's loss takes
    (real, fake), G's (fake, real).

    ``rasgan``: BCE(C(a) - mean C(b) -> 1) + BCE(C(b) - mean C(a) -> 0);
    ``ralsgan``: mean (C(a) - mean C(b) - 1)^2 + mean (C(b) - mean C(a) + 1)^2.
    """
    ahead = first_logits - second_logits.mean()
    behind = second_logits - first_logits.mean()
    if kind == "rasgan":
        return d_loss(ahead, behind)
    if kind == "ralsgan":
        return (ahead - 1).square().mean() + (behind + 1).square().mean()
    raise ValueError(f"unknown relativistic loss {kind!r}; params.yaml is checked by catgan.config")


def _relativistic_g(kind: str):
    def g(judge, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        real_logits = judge(real)  # first: DiffAugment draws for the reals, then for the fakes
        return relativistic(judge(fake), real_logits, kind)
    return g


def paired(first_logits: torch.Tensor, second_logits: torch.Tensor) -> torch.Tensor:
    """RpGAN (Jolicoeur-Martineau 2018; R3GAN, Huang et al. 2024): softplus(C(b) - C(a)) averaged
    over the pairs, image i of one batch against image i of the other: the first must look more
    real than its partner. D's loss takes (real, fake), G's (fake, real)."""
    return F.softplus(second_logits - first_logits).mean()


def _paired_g(judge, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    real_logits = judge(real)  # reals first, as the relativistic average G does
    return paired(judge(fake), real_logits)


class GanLoss(NamedTuple):
    d: Callable  # D's loss of the real and the fake logits
    g: Callable  # G's loss of D (as a function of images), the fakes and the reals
    realness: Callable  # of the real and fake logits: per real image, > 0 where D calls it real


# train.loss's choices (config.LOSSES): the course's D loss with either G form, or a relativistic
# pair, G's being D's with the batches swapped. G's calls D itself: only the relativistic losses
# judge the reals again (after D's step), and the others should not pay for that forward.
# realness is what ADA's overfitting signal takes the sign of: D's logit for the course's loss;
# for a relativistic one, how far the real is ahead of the fakes it is compared with.
GAN_LOSSES = {
    **{kind: GanLoss(d_loss, lambda judge, fake, real, kind=kind: g_loss(judge(fake), kind),
                     lambda real, fake: real)
       for kind in ("non_saturating", "saturating")},
    **{kind: GanLoss(lambda real, fake, kind=kind: relativistic(real, fake, kind),
                     _relativistic_g(kind), lambda real, fake: real - fake.mean())
       for kind in ("rasgan", "ralsgan")},
    "rpgan": GanLoss(paired, _paired_g, lambda real, fake: real - fake),
}


def gradient_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Zero-centred: the batch mean of |d logit_i / d image_i|^2, kept differentiable so that D's
    step can descend it. On the reals it is R1 (Mescheder et al. 2018), on the fakes R2; ``images``
    must have required grad before D saw them (through any augmentation, as ADA takes R1)."""
    grad, = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Total L2 norm of the parameters' gradients as a 0-dim tensor (no host sync)."""
    params = list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        device = params[0].device if params else torch.device("cpu")
        return torch.zeros((), device=device)
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
    return torch.linalg.vector_norm(norms)
