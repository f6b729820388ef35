"""One GAN update, as in the course: D's step on a real batch and G's fakes, then G's step on fresh
latents. Beyond it, each off by default: DiffAugment before D (``train.augment``), the loss pair
``train.loss`` names, the average of G's weights (``train.ema``), bf16 autocast."""
from __future__ import annotations

from typing import NamedTuple

import torch

from catgan.config import Params
from catgan.model.augment import augment
from catgan.model.losses import GAN_LOSSES, grad_norm
from catgan.training.outputs import COLUMNS
from catgan.training.state import TrainingState


# What a step records, named as steps.csv's columns; on the device, so the host never waits on it.
StepValues = NamedTuple("StepValues", [(name, torch.Tensor) for name in COLUMNS])


def gan_step(s: TrainingState, real: torch.Tensor, params: Params) -> StepValues:
    t, G, D = params.train, s.G, s.D
    d_loss, g_loss = GAN_LOSSES[t.loss]
    # bf16 autocast keeps the weights, gradients and the BCE losses in float32.
    autocast = torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")

    def judge(images: torch.Tensor) -> torch.Tensor:  # D's logits, through DiffAugment when set
        return D(augment(images, t.augment, s.noise) if t.augment else images)

    def latents() -> torch.Tensor:
        return torch.randn(real.shape[0], params.model.latent_dim, 1, 1, generator=s.noise,
                           device=real.device)

    # D's step: the reals judged real, G's fakes fake.
    z = latents()
    with autocast:
        real_logits = judge(real)
        with torch.no_grad():  # D's step needs G's images, not G's graph
            fake = G(z)
        fake_logits = judge(fake)
        loss_d = d_loss(real_logits, fake_logits)
    s.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    s.dist.average_gradients(D)
    s.opt_d.step()

    # G's step: fresh fakes, judged by D after its step. It back-propagates through D for G's
    # sake only: D's weight gradients would be zeroed before D's next step anyway, so they are
    # skipped (measured in benchmarks/README.md, g_step).
    z = latents()
    D.requires_grad_(False)
    try:
        with autocast:
            loss_g = g_loss(judge, G(z), real)
        s.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        D.requires_grad_(True)
    s.dist.average_gradients(G)
    norm = grad_norm(G.parameters())
    s.opt_g.step()
    if s.ema is not None:
        s.ema.update_parameters(G)
    return StepValues(loss_d=loss_d.detach(), loss_g=loss_g.detach(), g_grad_norm=norm.detach(),
                      # D's mean sigmoid on the reals and on G's fakes, before its step
                      real_score=torch.sigmoid(real_logits.detach().float()).mean(),
                      fake_score=torch.sigmoid(fake_logits.detach().float()).mean())
