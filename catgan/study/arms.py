"""A study's arms: named sets of params overrides, compared over seeds like the course's variants.

``course-baseline`` and ``course-fused`` are the course's two variants. ``modern`` is the course
baseline with the four techniques of docs/recipes.md on: an average of G's weights, DiffAugment,
the relativistic average least-squares loss and spectral normalisation in D; ``modern-ada`` is
modern with ADA's adaptive augmentation probability. ``r3`` is R3GAN's recipe (Huang et al. 2024)
on the course's networks: the paired relativistic loss with gradient penalties on reals and fakes,
D without normalisation, Adam's beta1 at 0. The ``ablate-*`` arms are the course baseline plus one
of modern's components each. What a 3-epoch CPU study of them
showed, and the GPU target still to measure: docs/recipes.md.

``catgan arm NAME`` prints an arm's overrides as ``-S`` arguments, so that one command trains it:
``dvc exp run -n modern $(catgan arm modern)``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from catgan.config import VARIANTS, nested, parse_params
from catgan.errors import UserError


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict[str, object]  # dotted params keys, as `dvc exp run -S` takes them
    ablation: bool = False
    course: bool = False  # one of the course's variants as the course trains it

    @property
    def variant(self) -> str:
        return str(self.overrides.get("model.variant", "baseline"))

    def settings(self) -> dict[str, str]:
        """The overrides with each value as `dvc exp run -S` reads it."""
        return {k: _text(v) for k, v in self.overrides.items()}

    def set_args(self) -> list[str]:
        return [a for k, v in self.settings().items() for a in ("-S", f"{k}={v}")]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):  # one shell word: `$(catgan arm NAME)` splits at spaces
        return "[" + ",".join(map(_text, value)) + "]"
    # DVC reads -S through Hydra, for which a,b,c unquoted is a sweep of three runs
    return f"'{value}'" if isinstance(value, str) and "," in value else str(value)


_BASE = {"model.variant": "baseline"}
COMPONENTS = {  # each of the modern recipe's techniques, and its ablation arm's name
    "ablate-ema": {"train.ema": 0.999},
    "ablate-augment": {"train.augment": "color,translation,cutout"},
    "ablate-ralsgan": {"train.loss": "ralsgan"},
    "ablate-sn": {"model.d_norm": "spectral"},
}
_MODERN = {**_BASE, **{k: v for c in COMPONENTS.values() for k, v in c.items()}}
# R3GAN's gamma for R1 and R2, chosen by a CPU pilot over 0.1, 0.5 and 2 (docs/recipes.md).
R3_GAMMA = 0.5
ARMS = {arm.name: arm for arm in [
    *(Arm(f"course-{v}", {"model.variant": v}, course=True) for v in VARIANTS),
    Arm("modern", _MODERN),
    Arm("modern-ada", {**_MODERN, "train.augment_p": "auto"}),
    Arm("r3", {**_BASE, "model.d_norm": "none", "train.loss": "rpgan", "train.r1": R3_GAMMA,
               "train.r2": R3_GAMMA, "train.betas": [0.0, 0.99]}),
    *(Arm(name, {**_BASE, **extra}, ablation=True) for name, extra in COMPONENTS.items()),
]}
DEFAULT = ("course-baseline", "course-fused", "modern")


def get(name: str) -> Arm:
    try:
        return ARMS[name]
    except KeyError:
        raise UserError(f"unknown arm {name!r}; known arms: {', '.join(ARMS)}") from None


def chosen(names: list[str] | None, variants: list[str] | None) -> list[str]:
    """The arms of ``--arms NAMES`` or ``--variants V`` (the course arms), else the default ones;
    each once, in the order given."""
    if names and variants:
        raise UserError("--arms and --variants: give one (--variants V is --arms course-V)")
    names = names or [course_arm(v).name for v in variants or []] or list(DEFAULT)
    return [get(name).name for name in dict.fromkeys(names)]


def ordered(names) -> list[str]:
    """Arms in the registry's order (course arms, modern, ablations), unknown names last."""
    rank = {name: i for i, name in enumerate(ARMS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def label(name: str) -> str:
    """The arm's name as pages show it: an ablation says so."""
    return f"{name} (ablation)" if name in ARMS and ARMS[name].ablation else name


def course_arm(variant: str) -> Arm:
    """The arm that trains ``variant`` as the course does."""
    return next(arm for arm in ARMS.values() if arm.course and arm.variant == variant)


def of_run(meta: dict) -> str:
    """A study run's arm: recorded since study format 3; before, its variant's course arm."""
    return meta.get("arm") or course_arm(meta["variant"]).name


def check(arm: Arm) -> None:
    """Refuses an arm whose overrides the params check refuses (a key or value not allowed)."""
    parse_params(nested(arm.overrides), source=f"arm {arm.name}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="catgan arm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help=f"one of: {', '.join(ARMS)}")
    arm = get(p.parse_args(argv).name)
    check(arm)
    print(" ".join(arm.set_args()))
