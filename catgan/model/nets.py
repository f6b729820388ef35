"""DCGAN generator/discriminator variants, weight init and per-layer summaries."""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class Discriminator(nn.Sequential):
    """Sequential whose N x 1 output is returned as N logits (sigmoid is left to the caller)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).view(-1)


def _d_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    ]


def _g_block(c_in: int, c_out: int, stride: int = 2, padding: int = 1) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _d_trunk() -> list[nn.Module]:
    """3 x 64 x 64 -> 256 x 8 x 8, shared by every variant."""
    return [*_d_block(3, 64), *_d_block(64, 128), *_d_block(128, 256)]


def _g_trunk(latent_dim: int) -> list[nn.Module]:
    """latent_dim x 1 x 1 -> 128 x 16 x 16, shared by every variant."""
    return [
        *_g_block(latent_dim, 512, stride=1, padding=0),
        *_g_block(512, 256),
        *_g_block(256, 128),
    ]


def baseline(latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """The course DCGAN: four stride-2 stages each way, then a 4x4 head."""
    generator = nn.Sequential(
        *_g_trunk(latent_dim),
        *_g_block(128, 64),
        nn.ConvTranspose2d(64, 3, kernel_size=4, stride=2, padding=1, bias=False),
        nn.Tanh(),
    )
    discriminator = Discriminator(
        *_d_trunk(),
        *_d_block(256, 512),
        nn.Conv2d(512, 1, kernel_size=4, stride=1, padding=0, bias=False),
        nn.Flatten(),
    )
    return generator, discriminator


def fused(latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """Baseline with each network's last two convs merged into one 8x8 conv."""
    generator = nn.Sequential(
        *_g_trunk(latent_dim),
        nn.ConvTranspose2d(128, 3, kernel_size=8, stride=4, padding=2, bias=False),
        nn.Tanh(),
    )
    discriminator = Discriminator(
        *_d_trunk(),
        nn.Conv2d(256, 1, kernel_size=8, stride=1, padding=0, bias=False),
        nn.Flatten(),
    )
    return generator, discriminator


VARIANTS = {"baseline": baseline, "fused": fused}  # names: config.VARIANTS


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise ``model`` in place: ``default`` keeps PyTorch's init, ``dcgan`` is the paper's."""
    if scheme == "default":
        return
    if scheme != "dcgan":
        raise ValueError(f"unknown init scheme {scheme!r}; params.yaml is checked by catgan.config")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def without_batchnorm(discriminator: Discriminator) -> Discriminator:
    """``discriminator`` with its BatchNorm layers taken out: R3GAN's D has no normalisation, since
    BatchNorm makes each image's output depend on the rest of its batch, which the gradient penalties
    and the paired loss assume it does not (Huang et al. 2024)."""
    return Discriminator(*(m for m in discriminator if not isinstance(m, nn.BatchNorm2d)))


def spectrally_normed(discriminator: Discriminator) -> Discriminator:
    """``discriminator`` as Miyato et al. (2018) build one: every conv's weight divided by its
    largest singular value, estimated by one power iteration per training forward, so that D
    cannot sharpen without bound. Its BatchNorm layers go: BatchNorm's output does not change when
    its input is scaled, so after a normalised conv it would undo the normalisation."""
    return Discriminator(*(spectral_norm(m) if isinstance(m, nn.Conv2d) else m
                           for m in without_batchnorm(discriminator)))


def build(variant: str, latent_dim: int, init: str,
          d_norm: str = "batchnorm") -> tuple[nn.Module, nn.Module]:
    """Build and initialise (generator, discriminator) for ``variant``; ``d_norm`` (config.D_NORMS):
    D's BatchNorm kept, replaced by spectral norm (``spectrally_normed``) or dropped."""
    generator, discriminator = VARIANTS[variant](latent_dim)
    init_weights(generator, init)
    init_weights(discriminator, init)
    if d_norm == "spectral":
        discriminator = spectrally_normed(discriminator)
    elif d_norm == "none":
        discriminator = without_batchnorm(discriminator)
    return generator, discriminator


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per leaf layer, in execution order: description, output shape (no batch), params.

    Runs a zero batch of 2 through an eval-mode deep copy, so neither the RNG nor BN statistics
    of ``model`` can change.
    """
    probe = copy.deepcopy(model).eval()
    first = next(probe.parameters())
    rows: list[dict] = []

    def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        layer = repr(module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # without its default arguments
            layer = f"{type(module).__name__}({module.num_features})"
        elif parametrize.is_parametrized(module):  # e.g. Conv2d(...) + SpectralNorm(weight)
            layer = f"{type(module).__bases__[0].__name__}({module.extra_repr()})" + "".join(
                f" + {type(p).__name__.lstrip('_')}({name})"
                for name, chain in module.parametrizations.items() for p in chain)
        rows.append({"layer": layer, "output_shape": list(output.shape[1:]),
                     "params": sum(p.numel() for p in module.parameters())})

    for module in _layers(probe):
        module.register_forward_hook(record)
    with torch.no_grad():
        probe(torch.zeros((2, *input_shape), device=first.device, dtype=first.dtype))
    return rows


def _layers(module: nn.Module):
    """The leaf layers, a parametrized layer counting as one (its parametrizations are inside)."""
    children = list(module.children())
    if not children or parametrize.is_parametrized(module):
        yield module
        return
    for child in children:
        yield from _layers(child)


def format_layer_table(rows: list[dict], title: str) -> str:
    """Markdown table of ``layer_table`` rows with a total-parameters line."""
    lines = [f"**{title}**", "", "| # | Layer | Output shape | Params |", "|---:|---|---|---:|"]
    for i, row in enumerate(rows, start=1):
        shape = " x ".join(str(d) for d in row["output_shape"])
        lines.append(f"| {i} | `{row['layer']}` | {shape} | {row['params']:,} |")
    total = sum(row["params"] for row in rows)
    lines += ["", f"Total parameters: {total:,}", ""]
    return "\n".join(lines)


@contextlib.contextmanager
def batch_statistics(model: nn.Module):
    """Run ``model`` as in training (BatchNorm on batch statistics), its buffers untouched: BN's
    running stats, and spectral norm's vectors, which a training-mode forward moves on.

    GAN networks only see batch statistics while they learn and the running ones lag behind (D's
    mix real and fake batches), so eval mode shows another network; the course samples so too.
    """
    saved = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.load_state_dict(saved, strict=False)
        model.train(was_training)


def sample(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """G(z) with batch statistics, as in training; uses no RNG and changes no state."""
    with batch_statistics(generator) as G:
        return G(z)
