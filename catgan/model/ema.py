"""An exponential moving average of G's weights (Yazici et al. 2019), as ProGAN and StyleGAN keep.

G's weights swing from step to step as D and G chase each other; their average sits nearer the
middle of the swing and draws steadier, often better, images. The decay ramps up with the update
count n as ProGAN's and StyleGAN's does, min(decay, (1 + n) / (10 + n)): early on G moves too fast
for a long average to help (a fixed 0.999 still holds the first steps' weights hundreds of steps
later), and later the average spans about 1 / (1 - decay) steps.
"""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ramped(decay: float, n: int) -> float:
    """The decay of update ``n`` (0 for the first)."""
    return min(decay, (1 + n) / (10 + n))


class GeneratorEMA(AveragedModel):
    """A copy of G, ``.module``, moved towards G after each of G's steps; its buffers (BatchNorm's
    running statistics) are averaged the same way. Its state_dict holds the update count."""

    def __init__(self, generator: torch.nn.Module, decay: float):
        # n_averaged stays on the CPU (no device given): reading it never waits for a GPU.
        super().__init__(generator, use_buffers=True)
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        # AveragedModel's own update copies the count to the device and reads it back each call,
        # which makes the host wait for the GPU every step; the count is read here on the CPU.
        update = get_ema_multi_avg_fn(ramped(self.decay, int(self.n_averaged)))
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                         [*model.parameters(), *model.buffers()], strict=True))
        for floating in (True, False):  # one call per kind: the update tests the first tensor's
            mine = [a for a, b in pairs if a.is_floating_point() == floating]
            if mine:
                update(mine, [b.detach() for a, b in pairs if a.is_floating_point() == floating],
                       None)
        self.n_averaged += 1
