"""What a training run carries from step to step, and so all its checkpoint holds: networks,
optimizers, the average of G's weights, the augmentation probability, random states, the grids'
fixed latents and what was recorded, with one ``state_dict`` / ``load_state_dict`` pair naming the checkpoint's contents."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from catgan.config import Params
from catgan.model.ada import AugmentP
from catgan.model.ema import GeneratorEMA
from catgan.model.nets import build
from catgan.training import checkpoint
from catgan.training.distributed import Dist

FIXED_SAMPLES = 64
# The fixed latent has its own stream so that how batches are drawn never changes it.
_FIXED_SEED_OFFSET = 0x5EED
_NOISE_SEED_OFFSET = 0x2A7E
_RANK_SEED_STRIDE = 7919


@dataclass
class TrainingState:
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: GeneratorEMA | None  # with train.ema: the average of G's weights
    augment_p: AugmentP | None  # with train.augment and train.augment_p other than 1
    order: torch.Generator  # the data order: the same in every process
    noise: torch.Generator  # latents and augmentations: one stream per process
    fixed_z: torch.Tensor  # the latent batch of every epoch's grid
    dist: Dist  # this process's place among the processes: not saved
    epoch: int = 0  # epochs finished
    history: list[dict] = field(default_factory=list)  # per epoch: step means, then quality
    steps: list[dict] = field(default_factory=list)  # one row every train.log_every steps

    @property
    def generator(self) -> torch.nn.Module:
        """What grids, quality checks and saved models show: with train.ema the average, else G."""
        return self.ema.module if self.ema is not None else self.G

    def _modules(self) -> dict:  # what keeps a state of its own, by its checkpoint key
        return {"G": self.G, "D": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d,
                **({"G_ema": self.ema} if self.ema is not None else {}),
                **({"augment_p": self.augment_p} if self.augment_p is not None else {})}

    def state_dict(self) -> dict:
        """Called in every process (each one's random state is gathered); the main one saves it."""
        return {**{key: part.state_dict() for key, part in self._modules().items()},
                "rng": self.dist.gather(checkpoint.rng_state(self.noise)),
                "order": self.order.get_state(), "fixed_z": self.fixed_z.cpu(), "epoch": self.epoch,
                "history": self.history, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        for key, part in self._modules().items():
            part.load_state_dict(state[key])
        checkpoint.restore_rng_state(state["rng"][self.dist.rank], self.noise)
        self.order.set_state(state["order"])
        self.fixed_z = state["fixed_z"].to(self.fixed_z.device)
        self.epoch, self.history, self.steps = state["epoch"], state["history"], state["steps"]


def new_state(params: Params, device: torch.device, dist: Dist) -> TrainingState:
    """A run's start, from train.seed (set by seed_everything): the same weights in every process."""
    t, m = params.train, params.model
    G, D = build(m.variant, m.latent_dim, m.init, m.d_norm)
    if t.sync_bn and dist.world > 1:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(net) for net in (G, D))
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=layout), D.to(device, memory_format=layout)
    ema = GeneratorEMA(G, t.ema) if t.ema else None  # before compiling: it samples only, eagerly
    if t.compile:
        G.compile()
        D.compile()
    adam = {"lr": t.lr, "betas": tuple(t.betas)}
    fixed = torch.Generator().manual_seed(t.seed + _FIXED_SEED_OFFSET)
    augment_p = AugmentP(t.augment_p, t.batch_size, device) if t.augment and t.augment_p != 1 else None
    return TrainingState(
        G, D, torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam), ema,
        augment_p,
        order=torch.Generator(device=device).manual_seed(t.seed),
        noise=torch.Generator(device=device).manual_seed(
            t.seed + _NOISE_SEED_OFFSET + _RANK_SEED_STRIDE * dist.rank),
        fixed_z=torch.randn(FIXED_SAMPLES, m.latent_dim, 1, 1, generator=fixed).to(device), dist=dist)
