"""One GAN update, as in the course: D's step on a real batch and G's fakes, then G's step on fresh
latents. Beyond it, each off by default: augmentation before D (``train.augment``, each policy
applied with probability ``train.augment_p``, which ADA may adapt), the loss pair ``train.loss``
names, the gradient penalties on reals and fakes (``train.r1``, ``train.r2``), the average of G's
weights (``train.ema``), bf16 autocast."""
from __future__ import annotations

from typing import NamedTuple

import torch

from catgan.config import Params
from catgan.model.augment import augment
from catgan.model.losses import GAN_LOSSES, grad_norm, gradient_penalty
from catgan.training.outputs import COLUMNS
from catgan.training.state import TrainingState


# What a step records, named as steps.csv's columns; on the device, so the host never waits on it.
StepValues = NamedTuple("StepValues", [(name, torch.Tensor) for name in COLUMNS])


def gan_step(s: TrainingState, real: torch.Tensor, params: Params) -> StepValues:
    t, G, D = params.train, s.G, s.D
    loss = GAN_LOSSES[t.loss]
    # bf16 autocast keeps the weights, gradients and the BCE losses in float32.
    autocast = torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    p = s.augment_p.p if s.augment_p is not None else None

    def judge(images: torch.Tensor) -> torch.Tensor:  # D's logits, through augmentation when set
        return D(augment(images, t.augment, s.noise, p) if t.augment else images)

    def latents() -> torch.Tensor:
        return torch.randn(real.shape[0], params.model.latent_dim, 1, 1, generator=s.noise,
                           device=real.device)

    # D's step: the reals judged real, G's fakes fake. A penalised batch is differentiated with
    # respect to the images as they were before augmentation.
    z = latents()
    seen = real.detach().requires_grad_() if t.r1 else real
    with autocast:
        real_logits = judge(seen)
        with torch.no_grad():  # D's step needs G's images, not G's graph
            fake = G(z)
        fake = fake.requires_grad_() if t.r2 else fake
        fake_logits = judge(fake)
        loss_d = loss.d(real_logits, fake_logits)
        if t.r1:
            loss_d = loss_d + t.r1 / 2 * gradient_penalty(real_logits, seen)
        if t.r2:
            loss_d = loss_d + t.r2 / 2 * gradient_penalty(fake_logits, fake)
    s.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    s.dist.average_gradients(D)
    s.opt_d.step()
    if s.augment_p is not None:
        s.augment_p.observe(loss.realness(real_logits.detach(), fake_logits.detach()),
                            s.dist.average)

    # G's step: fresh fakes, judged by D after its step. It back-propagates through D for G's
    # sake only: D's weight gradients would be zeroed before D's next step anyway, so they are
    # skipped (measured in benchmarks/README.md, g_step).
    z = latents()
    D.requires_grad_(False)
    try:
        with autocast:
            loss_g = loss.g(judge, G(z), real)
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
                      fake_score=torch.sigmoid(fake_logits.detach().float()).mean(),
                      # the chance each augmentation had to change an image this step; filled on
                      # the device, as a copy from the host would make it wait every step
                      augment_p=p if p is not None else torch.full(
                          (), 1.0 if t.augment else 0.0, device=real.device))
