"""The probability that each augmentation touches an image (``train.augment_p``): fixed, or adapted
during training by ADA's heuristic (Karras et al. 2020, StyleGAN2-ADA).

ADA watches r_t = E[sign(D's verdict on the reals)], which nears 1 as D starts to memorise them,
and every ``INTERVAL`` steps moves p one notch towards where r_t sits at ``TARGET``: up while r_t is
above it, down while below, clamped to [0, 1]. A notch is sized so that p would go from 0 to 1 in
``SPEED_IMAGES`` images. Augmentation thus starts at 0 and grows only as D overfits, instead of
DiffAugment's p = 1 from the first step, which can leak into the samples (cutout boxes).
"""
from __future__ import annotations

import torch

TARGET = 0.6  # ADA's ada_target
INTERVAL = 4  # steps between adjustments: ADA's ada_interval
SPEED_IMAGES = 500_000  # ADA's ada_kimg = 500


class AugmentP:
    """p for ``train.augment_p`` (a number, or ``auto``) with ``train.batch_size`` images a step.
    Everything stays on the device: the host never waits for p or r_t."""

    def __init__(self, setting: float | str, batch_size: int, device: torch.device):
        self.adaptive = setting == "auto"
        self.p = torch.tensor(0.0 if self.adaptive else float(setting), device=device)
        self.notch = batch_size * INTERVAL / SPEED_IMAGES
        self.signs = torch.zeros((), device=device)  # sum of the steps' mean signs this interval
        self.seen = 0  # steps into the interval

    def observe(self, realness: torch.Tensor, average=lambda t: t) -> None:
        """After D's step: ``realness`` > 0 where D called a real image real (losses.GanLoss);
        ``average`` makes the processes' means one, so that every process keeps the same p."""
        if not self.adaptive:
            return
        self.signs += average(torch.sign(realness.detach().float()).mean())
        self.seen += 1
        if self.seen == INTERVAL:
            r_t = self.signs / INTERVAL
            self.p = (self.p + torch.sign(r_t - TARGET) * self.notch).clamp(0, 1)
            self.signs.zero_()
            self.seen = 0

    def state_dict(self) -> dict:
        # Copies: on the CPU .cpu() is the tensor itself, which observe() goes on changing in place.
        return {"p": self.p.cpu().clone(), "signs": self.signs.cpu().clone(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.p = state["p"].to(self.p.device, copy=True)
        self.signs = state["signs"].to(self.signs.device, copy=True)
        self.seen = state["seen"]
