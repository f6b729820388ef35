"""A finished run as the comparison sees it, whatever store it came from."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from catgan.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One finished run: its variant, seed and final metrics under flat dotted keys."""

    name: str
    variant: str
    seed: int
    metrics: dict[str, float]


def record(name: str, variant: Any, seed: Any, metrics: dict[str, float],
           where: str) -> Record | None:
    if variant in (None, "") or seed in (None, ""):
        log.warning("%s: run %s has no model.variant or train.seed param; left out", where, name)
        return None
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UserError(f"{where}: run {name} has train.seed = {seed!r}, not an integer; "
                        "fix or delete that run") from None
    return Record(name, str(variant), seed, metrics)


def latest_per_seed(records: list[Record], where: str) -> list[Record]:
    """Keep the first (newest) run of each variant and seed: a re-run is not another seed."""
    kept: dict[tuple[str, int], Record] = {}
    for rec in records:
        first = kept.setdefault((rec.variant, rec.seed), rec)
        if first is not rec:
            log.warning("%s: %s and %s both ran %s seed %d; using the newer, %s", where, first.name,
                        rec.name, rec.variant, rec.seed, first.name)
    return list(kept.values())
