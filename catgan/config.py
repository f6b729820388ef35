"""params.yaml: the single source of configuration, validated on load.

Each stage group is a frozen dataclass. A field's metadata says what values are allowed, so one
validator covers every key and every error names the key, the value given and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catgan.errors import UserError

# Values quoted in errors stay short, even a YAML alias that expands to millions of items.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 80, 80


# The allowed names live here rather than beside their code (data.sources, models.VARIANTS, losses):
# importing those would load torch into every stage and make fetch depend on the model code.
SOURCES = ("kaggle", "folder", "synthetic")
VARIANTS = ("baseline", "fused")
INIT_SCHEMES = ("default", "dcgan")
# D's and G's loss (catgan/model/losses.py): the course's BCE, G maximising log D(G(z)) or minimising
# log(1 - D(G(z))); the relativistic average standard and least-squares GANs (Jolicoeur-Martineau 2018).
# rpgan: the paired relativistic loss that R3GAN (Huang et al. 2024) trains with R1 and R2.
LOSSES = ("non_saturating", "saturating", "rasgan", "ralsgan", "rpgan")
# D's normalisation: the course's BatchNorm, spectral norm in its place (Miyato et al. 2018), none.
D_NORMS = ("batchnorm", "spectral", "none")
GONE = {"train.g_loss": "G's loss is set by train.loss now (train.loss: standard with train.g_loss: "
                        "X is train.loss: X): remove train.g_loss and set train.loss",
        "model.spectral_norm": "D's normalisation is model.d_norm now (model.spectral_norm: true is "
                               "model.d_norm: spectral, false is batchnorm): remove "
                               "model.spectral_norm and set model.d_norm"}
AUGMENTS = ("color", "translation", "cutout")  # DiffAugment's policies (catgan/model/augment.py)
_AUGMENT = "(" + "|".join(AUGMENTS) + ")"
# The user:password@ of a URL: here rather than in mlflowstore, which imports this module.
PASSWORD_IN_URL = re.compile(r"(?<=://)([^/@:\s]*):[^/\s]*@")


def _knob(default, *, choices=None, low=None, high=None, below=None, length=None, pattern=None,
          shape="", words=None):
    """``pattern``: a regex the whole value must match, described to the user by ``shape``.
    ``below`` (given with ``low``): the value must lie in [low, below). ``words``: text values a
    number knob also takes."""
    meta = {"choices": choices, "low": low, "high": high, "below": below, "length": length,
            "pattern": pattern, "shape": shape, "words": words}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    source: str = _knob("kaggle", choices=SOURCES)
    kaggle_dataset: str = _knob("spandan2/cats-faces-64x64-for-generative-models",
                                pattern=r"[^/\s]+/[^/\s]+(/[0-9]+)?",
                                shape="owner/name or owner/name/version, as in the dataset's address")
    kaggle_timeout_s: float = _knob(60.0, low=0.1, high=3600.0)
    path: str = ""
    synthetic_count: int = _knob(2000, low=1, high=1_000_000)
    seed: int = _knob(0, low=0)
    image_size: int = _knob(64, choices=(64,))  # the models are built for 64x64 images
    min_size: int = _knob(32, low=1)
    dedup: bool = True
    max_bad_fraction: float = _knob(0.05, low=0.0, high=1.0)
    workers: int = _knob(0, low=0, high=256)


@dataclass(frozen=True)
class ModelConfig:
    variant: str = _knob("baseline", choices=VARIANTS)
    latent_dim: int = _knob(128, low=1, high=4096)
    init: str = _knob("default", choices=INIT_SCHEMES)
    d_norm: str = _knob("batchnorm", choices=D_NORMS)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _knob(60, low=1, high=100_000)
    batch_size: int = _knob(128, low=1, high=65_536)
    steps_per_epoch: int = _knob(0, low=0)
    lr: float = _knob(0.0002, low=1e-8, high=1.0)
    betas: list = _knob([0.5, 0.999], low=0.0, high=0.999999, length=2)
    seed: int = _knob(0, low=0)
    loss: str = _knob("non_saturating", choices=LOSSES)
    ema: float = _knob(0.0, low=0.0, below=1.0)  # 0 = off; 1 would never move from G's init
    augment: str = _knob("", pattern=f"({_AUGMENT}(,{_AUGMENT})*)?",
                         shape="'' (off) or a comma-separated list of " + ", ".join(AUGMENTS)
                         + " without spaces, such as 'color,translation,cutout'")
    augment_p: float | str = _knob(1.0, low=0.0, high=1.0, words=("auto",))  # auto: ADA's
    r1: float = _knob(0.0, low=0.0, high=1e6)  # gamma of the gradient penalty on reals; 0 = off
    r2: float = _knob(0.0, low=0.0, high=1e6)  # and on fakes
    device: str = _knob("auto", choices=("auto", "cpu", "cuda"))
    threads: int = _knob(0, low=0, high=1024)
    channels_last: bool = True
    precision: str = _knob("fp32", choices=("fp32", "bf16"))
    compile: bool = False
    nproc: int = _knob(1, low=1, high=64)
    sync_bn: bool = False
    log_every: int = _knob(10, low=1)

    def __post_init__(self):
        if self.augment_p != 1 and not self.augment:
            raise UserError(f"train.augment_p = {self.augment_p} needs augmentations to apply: set "
                            "train.augment (e.g. color,translation,cutout) or train.augment_p: 1")
        if (self.r1 or self.r2) and self.compile:
            raise UserError("train.r1 and train.r2 differentiate D's gradient (a double backward), "
                            "which torch.compile cannot: set train.compile: false or train.r1 and "
                            "train.r2: 0")


@dataclass(frozen=True)
class EvalConfig:
    num_samples: int = _knob(1000, low=2)
    seed: int = _knob(1234, low=0)
    batch_size: int = _knob(250, low=1)
    inception_weights: str = ""
    kid_subset_size: int = _knob(1000, low=2)
    every: int = _knob(1, low=0)
    monitor_samples: int = _knob(500, low=2)


@dataclass(frozen=True)
class PlotConfig:
    fps: int = _knob(4, low=1, high=60)
    dpi: int = _knob(100, low=30, high=600)


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    experiment: str = "catgan"
    uri: str = ""
    # Part of DVC experiment names and MLflow filters: letters, digits, - and _ only.
    study: str = _knob("", pattern=r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})?", shape="letters, digits, "
                       "'-' and '_' only, starting with a letter or digit (at most 64)")
    arm: str = _knob("", pattern=r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})?", shape="letters, digits, "
                     "'-' and '_' only, starting with a letter or digit (at most 64)")

    def __post_init__(self):
        if PASSWORD_IN_URL.search(self.uri):
            raise UserError("tracking.uri holds a password, which params.yaml would commit, `dvc exp "
                            "show` print and MLflow record as a param; remove it from tracking.uri and "
                            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or the whole "
                            "URI in MLFLOW_TRACKING_URI) instead")


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def project_root() -> Path:
    """The main project's root, also inside DVC's temp and queued experiment workspaces."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    import yaml  # here, so that training can run where only torch, numpy and Pillow are installed

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root, where params.yaml lives") from None
    except (OSError, UnicodeDecodeError) as err:  # a folder, no permission, not UTF-8 text
        raise UserError(f"{path}: cannot be read as UTF-8 text ({err}); save params.yaml as "
                        "UTF-8") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the syntax") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be valid params; fix the syntax") from None
    return parse_params(raw if raw is not None else {}, source=str(path))


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    return _build(Params, raw, prefix="", source=source)


def _build(cls, raw: Any, *, prefix: str, source: str):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"{source}: {where} must be a mapping of keys, got {_SHORT.repr(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if prefix + str(key) in GONE:
            raise UserError(f"{source}: key {prefix + str(key)!r} is gone: {GONE[prefix + str(key)]}")
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; allowed: {', '.join(fields)}"
            raise UserError(f"{source}: unknown key {prefix + str(key)!r}{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key, value, hint = prefix + name, raw[name], hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, prefix=key + ".", source=source)
        else:
            values[name] = _check(key, value, hint, f.metadata, source)
    try:
        return cls(**values)
    except UserError as err:  # a rule across keys, from the group's __post_init__
        raise UserError(f"{source}: {err}") from None


def _check(key: str, value: Any, hint: type, meta, source: str):
    def fail(allowed: str):
        raise UserError(f"{source}: {key} = {_SHORT.repr(value)} is not allowed; expected {allowed}")

    if meta.get("words") and isinstance(value, str):
        return value if value in meta["words"] else fail(
            f"a number in [{meta['low']}, {meta['high']}] or " + ", ".join(meta["words"]))
    if meta.get("words"):
        hint = float
    if hint is list:
        items = value if isinstance(value, list) else fail(f"a list of {meta['length']} numbers")
        if len(items) != meta["length"]:
            fail(f"a list of exactly {meta['length']} numbers")
        return [_check(f"{key}[{i}]", v, float, meta, source) for i, v in enumerate(items)]
    if hint is bool:
        return value if isinstance(value, bool) else fail("true or false")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        fail("an integer")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            fail("a finite number")
        if not math.isfinite(value):
            fail("a finite number")
    if hint is str and not isinstance(value, str):
        fail("a string (quote it in YAML)")
    pattern = meta.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        fail(meta["shape"])
    choices = meta.get("choices")
    if choices and value not in choices:
        fail("one of " + ", ".join(map(str, choices)))
    low, high, below = meta.get("low"), meta.get("high"), meta.get("below")
    if below is not None and not low <= value < below:
        fail(f"a number in [{low}, {below})")
    if low is not None and value < low:
        fail(f"a value >= {low}")
    if high is not None and value > high:
        fail(f"a value <= {high}")
    return value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and dataclasses (``Params``) under dotted keys, as in ``dvc exp run -S`` and
    MLflow params; lists are values, like ``train.betas``."""
    if dataclasses.is_dataclass(tree):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) or dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nested(flat: dict[str, Any]) -> dict:
    """Dotted keys as nested dicts, as params.yaml and parse_params take them: flatten undone."""
    tree: dict = {}
    for key, value in flat.items():
        *groups, leaf = key.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
            if not isinstance(node, dict):
                raise UserError(f"{key}: {group!r} is given a value of its own too; drop one")
        node[leaf] = value
    return tree


def check_settable(keys) -> None:
    """Refuses ``-S key`` for keys params.yaml lacks, as `dvc exp run -S` does; for a key that is
    gone, says what replaced it."""
    known = flatten(load_params())
    for key in keys:
        if key in GONE:
            raise UserError(f"-S {key}: gone; {GONE[key]}")
        if key not in known:
            raise UserError(f"-S {key}: no such key in params.yaml; `dvc exp run -S` only sets "
                            "existing keys (docs/parameters.md lists them)")


def flat_numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics tree under dotted keys; text and lists are left out."""
    return {k: float(v) for k, v in flatten(tree, prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
