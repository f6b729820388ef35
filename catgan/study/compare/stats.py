"""Statistics over seeds: per group (an arm, or a variant) a Student t interval of the mean, per
metric the difference of the two groups with a Welch t interval, and a verdict only where the metric
has a known better direction."""
from __future__ import annotations

import fnmatch
import math
import re
import statistics
from dataclasses import dataclass
from typing import Sequence

from catgan.errors import UserError
from catgan.study.compare.runs import Record

KEY_FAMILIES = ("swd", "fid", "kid")  # distances to the real images: lower is better
LOWER, HIGHER_TO_1 = "lower", "higher up to 1"


@dataclass(frozen=True)
class Stat:
    """One group's values of one metric over seeds; no std or interval below two seeds."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float | None
    ci: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def identical(self) -> bool:
        """Two seeds or more, all with the same value: an interval of zero width, exactly."""
        return self.std == 0


@dataclass(frozen=True)
class Row:
    """One metric: both groups' stats, the difference (second minus first) and the verdict."""

    metric: str
    direction: str | None
    stats: tuple[Stat, Stat]
    difference: float
    interval: tuple[float, float] | None
    df: float | None
    verdict: str


@dataclass(frozen=True)
class Summary:
    groups: tuple[str, str]
    confidence: float
    runs: tuple[Record, ...]
    rows: tuple[Row, ...]


def direction(metric: str) -> str | None:
    """Which way is better for a metric, or None when it has no better side (losses, scores).

    The real-vs-real floor is a reference, not the model, and ``*_std`` is an estimator's spread.
    """
    leaf = re.split(r"[./]", metric)[-1]
    if "floor" in metric or leaf.endswith("_std"):
        return None
    if leaf == "diversity_ratio":
        return HIGHER_TO_1
    return LOWER if _words(metric) & set(KEY_FAMILIES) else None


def family(metric: str) -> str | None:
    if direction(metric) != LOWER:
        return None
    return next(f for f in KEY_FAMILIES if f in _words(metric))


def _words(metric: str) -> set[str]:
    """``eval.swd.swd_avg`` or MLflow's ``epoch/swd_avg``: {eval, swd, avg}, {epoch, swd, avg}."""
    return set(re.split(r"[./_]", metric))


def describe(seeds: Sequence[int], values: Sequence[float], confidence: float) -> Stat:
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Stat(tuple(seeds), tuple(values), mean, None, None)
    std = statistics.stdev(values)
    if std == 0:  # the same value in every seed (the real set's own diversity): no spread to scale
        return Stat(tuple(seeds), tuple(values), mean, 0.0, (mean, mean))
    from scipy import stats  # here, not at the top: importing it takes seconds

    ci = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=std / math.sqrt(len(values)))
    return Stat(tuple(seeds), tuple(values), mean, std, (float(ci[0]), float(ci[1])))


def welch(a: Stat, b: Stat,
          confidence: float) -> tuple[float, tuple[float, float] | None, float | None]:
    """b.mean - a.mean, its Welch t interval and Welch-Satterthwaite degrees of freedom."""
    diff = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return diff, None, None
    if a.std == 0 and b.std == 0:  # no seed-to-seed spread on either side: the difference is exact
        return diff, (diff, diff), None
    from scipy import stats

    test = stats.ttest_ind(b.values, a.values, equal_var=False)
    ci = test.confidence_interval(confidence)
    return diff, (float(ci.low), float(ci.high)), float(test.df)


def verdict(metric: str, groups: tuple[str, str], a: Stat, b: Stat,
            interval: tuple[float, float] | None) -> str:
    if interval is None:
        few = " and ".join(f"{g} has {s.n} seed{'s' * (s.n != 1)}" for g, s in zip(groups, (a, b))
                           if s.n < 2)
        return f"no interval: {few}; run at least 2 seeds each"
    if interval[0] <= 0 <= interval[1]:
        if interval == (0.0, 0.0):
            return "identical in every seed"
        seeds = str(a.n) if a.n == b.n else f"{a.n} and {b.n}"
        return f"within the noise: no difference shown with {seeds} seeds"
    high, low = (groups[1], groups[0]) if b.mean > a.mean else (groups[0], groups[1])
    way = direction(metric)
    if way == LOWER:
        return f"{low} is better (lower)"
    if way == HIGHER_TO_1:
        if min(a.mean, b.mean) >= 1:
            return f"{high} is higher, but both are at or above 1: no better side"
        return f"{high} is better (higher, toward 1)"
    return f"{high} is higher (no better side for this metric)"


def _groups(records: Sequence[Record], chosen: Sequence[str] | None) -> tuple[str, str]:
    found = sorted({r.group for r in records}, key=lambda g: (g != "baseline", g))
    if chosen:
        missing = [g for g in chosen if g not in found]
        if len(chosen) != 2 or chosen[0] == chosen[1] or missing:
            raise UserError(f"variants {list(chosen)}: name two different variants (or arms) that "
                            f"have finished runs; found {', '.join(found) or 'none'}")
        return chosen[0], chosen[1]
    if len(found) != 2:
        raise UserError(f"need finished runs of exactly two variants to compare, found "
                        f"{len(found)} ({', '.join(found) or 'none'}); run both, e.g. dvc exp run "
                        "--queue -S model.variant=baseline,fused -S train.seed=0,1,2, or pick two "
                        "with --variants")
    return found[0], found[1]


def summarize(records: Sequence[Record], *, confidence: float = 0.95,
              metrics: Sequence[str] | None = None,
              groups: Sequence[str] | None = None) -> Summary:
    """Compare two groups (Record.group: arms, or variants) over seeds for every metric both have
    (or those matching ``metrics``, shell-style patterns). Non-finite values count as missing."""
    if not 0 < confidence < 1:
        raise UserError(f"confidence = {confidence} must lie strictly between 0 and 1, e.g. 0.95")
    if not records:
        raise UserError("no finished runs to compare; run the experiments first "
                        "(dvc exp run --queue ... then dvc queue start)")
    pair = _groups(records, groups)
    runs = sorted((r for r in records if r.group in pair),
                  key=lambda r: (pair.index(r.group), r.seed))
    for prev, rec in zip(runs, runs[1:]):
        if (prev.group, prev.seed) == (rec.group, rec.seed):
            raise UserError(f"runs {prev.name} and {rec.name} are both {rec.group} seed "
                            f"{rec.seed}; a re-run is not another seed: remove one")
    names = sorted({k for r in runs for k in r.metrics})
    if metrics:
        names = [k for k in names if any(fnmatch.fnmatchcase(k, p) for p in metrics)]
        if not names:
            raise UserError(f"no metric matches {' '.join(metrics)}; available: "
                            f"{', '.join(sorted({k for r in runs for k in r.metrics}))}")
    rows = []
    for name in sorted(names, key=lambda k: (direction(k) is None, k)):
        side = [[(r.seed, r.metrics[name]) for r in runs
                 if r.group == group and math.isfinite(r.metrics.get(name, math.nan))]
                for group in pair]
        if not all(side):
            continue
        a, b = (describe([s for s, _ in pts], [v for _, v in pts], confidence) for pts in side)
        diff, interval, df = welch(a, b, confidence)
        rows.append(Row(name, direction(name), (a, b), diff, interval, df,
                        verdict(name, pair, a, b, interval)))
    if not rows:
        raise UserError(f"no metric has finite values for both {pair[0]} and {pair[1]}")
    return Summary(pair, confidence, tuple(runs), tuple(rows))
