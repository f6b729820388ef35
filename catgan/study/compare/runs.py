"""A finished run as the comparison sees it, whatever store it came from."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from catgan.errors import UserError

log = logging.getLogger(__name__)

# Numbers the metric files hold that measure nothing: the epochs trained (metrics/train.json), and
# the evaluated set's size and whether FID/KID ran (metrics/eval.json). Not compared.
NOT_METRICS = frozenset({"train.epoch", "eval.num_samples", "eval.inception.computed"})


@dataclass(frozen=True)
class Record:
    """One finished run: its group (see ``group``), seed and final metrics under flat dotted keys
    (the names ``dvc exp show`` gives them), settings left out."""

    name: str
    group: str  # an arm for a study's runs, else a model variant
    seed: int
    metrics: dict[str, float]


def group(params: dict) -> Any:
    """What a run is compared as: its study arm (tracking.arm) where it has one, else its
    variant."""
    return params.get("tracking.arm") or params.get("model.variant")


def record(name: str, group: Any, seed: Any, metrics: dict[str, float],
           where: str) -> Record | None:
    if group in (None, "") or seed in (None, ""):
        log.warning("%s: run %s has no model.variant or train.seed param; left out", where, name)
        return None
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UserError(f"{where}: run {name} has train.seed = {seed!r}, not an integer; "
                        "fix or delete that run") from None
    return Record(name, str(group), seed,
                  {k: v for k, v in metrics.items() if k not in NOT_METRICS})


def latest_per_seed(records: list[Record], where: str) -> list[Record]:
    """Keep the first (newest) run of each group and seed: a re-run is not another seed."""
    kept: dict[tuple[str, int], Record] = {}
    for rec in records:
        first = kept.setdefault((rec.group, rec.seed), rec)
        if first is not rec:
            log.warning("%s: %s and %s both ran %s seed %d; using the newer, %s", where, first.name,
                        rec.name, rec.group, rec.seed, first.name)
    return list(kept.values())
