"""Is one variant better than the other over several seeds, and how sure are we?

Runs come from DVC experiments (``dvc exp show --json``) or from MLflow. Per variant and metric: the
mean over seeds with a Student t interval; per metric: the difference of the two variants with a
Welch t interval, and a verdict only where the metric has a known better direction.
"""
from __future__ import annotations

import fnmatch
import io
import json
import logging
import math
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from catgan.dvccli import dvc_executable
from catgan.errors import UserError
from catgan.fileio import write_bytes, write_json, write_text

log = logging.getLogger(__name__)

METRIC_FILES = {"metrics/eval.json": "eval", "metrics/train.json": "train"}
KEY_FAMILIES = ("swd", "fid", "kid")  # distances to the real images: lower is better
LOWER, HIGHER_TO_1 = "lower", "higher up to 1"


@dataclass(frozen=True)
class Record:
    """One finished run: its variant, seed and final metrics under flat dotted keys."""

    name: str
    variant: str
    seed: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Stat:
    """One variant's values of one metric over seeds; no std or interval below two seeds."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    std: float | None
    ci: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Row:
    """One metric: both variants' stats, the difference (second minus first) and the verdict."""

    metric: str
    direction: str | None
    stats: tuple[Stat, Stat]
    difference: float
    interval: tuple[float, float] | None
    df: float | None
    verdict: str


@dataclass(frozen=True)
class Summary:
    variants: tuple[str, str]
    confidence: float
    runs: tuple[Record, ...]
    rows: tuple[Row, ...]


# ---------------------------------------------------------------------------------------- sources

def flatten(data: dict, prefix: str = "") -> dict[str, float]:
    """Nested numbers under dotted keys; text and other non-numbers are left out."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + str(key)] = float(value)
    return out


def _record(name: str, variant: Any, seed: Any, metrics: dict[str, float],
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


def _latest_per_seed(records: list[Record], where: str) -> list[Record]:
    """Keep the first (newest) run of each variant and seed: a re-run is not another seed."""
    kept: dict[tuple[str, int], Record] = {}
    for rec in records:
        first = kept.setdefault((rec.variant, rec.seed), rec)
        if first is not rec:
            log.warning("%s: %s and %s both ran %s seed %d; using the newer, %s", where, first.name,
                        rec.name, rec.variant, rec.seed, first.name)
    return list(kept.values())


def records_from_exp_show(data: Any, where: str = "dvc exp show") -> list[Record]:
    """Finished experiments from parsed ``dvc exp show --json`` output, newest first.

    The workspace and the baseline commits are not experiments and are passed over; queued, running
    and failed experiments, and those without metrics, are left out.
    """
    if not isinstance(data, list):
        raise UserError(f"{where}: expected a JSON list of commits, got {type(data).__name__}; "
                        "is this dvc 3.x?")
    found, skipped = [], []
    for commit in data:
        for exp in (commit.get("experiments") or []) if isinstance(commit, dict) else []:
            rev = (exp.get("revs") or [{}])[0]
            name = exp.get("name") or rev.get("name") or rev.get("rev", "?")
            state = (exp.get("executor") or {}).get("state", "success")
            payload = rev.get("data") or {}
            metrics: dict[str, float] = {}
            for file, prefix in METRIC_FILES.items():
                content = (payload.get("metrics") or {}).get(file) or {}
                if isinstance(content.get("data"), dict):
                    metrics.update(flatten(content["data"], prefix + "."))
            if state != "success" or rev.get("error") or not metrics:
                skipped.append(f"{name} ({'failed' if rev.get('error') else state})")
                continue
            params = ((payload.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            rec = _record(name, (params.get("model") or {}).get("variant"),
                          (params.get("train") or {}).get("seed"), metrics, where)
            if rec:
                found.append((payload.get("timestamp") or "", rec))
    if skipped:
        log.info("%s: left out %d unfinished or failed experiment(s): %s", where, len(skipped),
                 ", ".join(skipped))
    found.sort(key=lambda item: item[0], reverse=True)  # ISO times: newest first
    return _latest_per_seed([rec for _, rec in found], where)


def collect_dvc(repo: Path, all_commits: bool = False) -> list[Record]:
    """Finished DVC experiments of ``repo``'s HEAD commit (or of every commit)."""
    repo = Path(repo)
    cmd = [dvc_executable(), "exp", "show", "--json", "--no-fetch", *(["-A"] if all_commits else [])]
    try:
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"{repo}: could not run dvc exp show ({err})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{repo}: dvc exp show failed: {last}; run it from a git+DVC project, "
                        "or pass --repo")
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError as err:
        raise UserError(f"{repo}: dvc exp show printed no valid JSON ({err})") from None
    return records_from_exp_show(data, where=f"DVC experiments in {repo.resolve()}")


def collect_mlflow(uri: str, experiment: str) -> list[Record]:
    """Finished runs of MLflow ``experiment``, newest first, with each metric's latest value."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"MLflow store {uri} does not exist; train with tracking.enabled: true "
                        "first, or pass --tracking-uri")
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
    except Exception as err:  # the store's own errors vary by backend
        raise UserError(f"MLflow store {uri} is unreachable ({type(err).__name__}); "
                        "fix --tracking-uri") from None
    if exp is None:
        raise UserError(f"MLflow store {uri} has no experiment '{experiment}'; pass --experiment "
                        "with the name set in tracking.experiment")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id],
                                  filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], page_token=token,
                                  max_results=1000)
        runs.extend(page)
        token = page.token
        if not token:
            break
    records, where = [], f"MLflow experiment '{experiment}'"
    for run in runs:
        p = run.data.params
        rec = _record(run.info.run_name or run.info.run_id, p.get("model.variant"),
                      p.get("train.seed"), dict(run.data.metrics), where)
        if rec and rec.metrics:
            records.append(rec)
    return _latest_per_seed(records, where)


# ------------------------------------------------------------------------------------- statistics

def direction(metric: str) -> str | None:
    """Which way is better for a metric, or None when it has no better side (losses, scores).

    The real-vs-real floor is a reference, not the model, and ``*_std`` is an estimator's spread.
    """
    leaf = metric.rsplit(".", 1)[-1]
    if "floor" in metric or leaf.endswith("_std"):
        return None
    if leaf == "diversity_ratio":
        return HIGHER_TO_1
    words = set(metric.replace("_", ".").split("."))
    return LOWER if words & set(KEY_FAMILIES) else None


def family(metric: str) -> str | None:
    if direction(metric) != LOWER:
        return None
    words = set(metric.replace("_", ".").split("."))
    return next(f for f in KEY_FAMILIES if f in words)


def t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student t critical value; scipy.stats is imported here as it takes seconds."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def describe(seeds: Sequence[int], values: Sequence[float], confidence: float) -> Stat:
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Stat(tuple(seeds), tuple(values), mean, None, None)
    std = statistics.stdev(values)
    half = t_quantile(confidence, len(values) - 1) * std / math.sqrt(len(values))
    return Stat(tuple(seeds), tuple(values), mean, std, (mean - half, mean + half))


def welch(a: Stat, b: Stat,
          confidence: float) -> tuple[float, tuple[float, float] | None, float | None]:
    """b.mean - a.mean, its Welch t interval and Welch-Satterthwaite degrees of freedom."""
    diff = b.mean - a.mean
    if a.n < 2 or b.n < 2:
        return diff, None, None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0:  # no seed-to-seed spread on either side: the difference is exact
        return diff, (diff, diff), None
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = t_quantile(confidence, df) * math.sqrt(va + vb)
    return diff, (diff - half, diff + half), df


def verdict(metric: str, variants: tuple[str, str], a: Stat, b: Stat,
            interval: tuple[float, float] | None) -> str:
    if interval is None:
        few = " and ".join(f"{v} has {s.n} seed{'s' * (s.n != 1)}" for v, s in zip(variants, (a, b))
                           if s.n < 2)
        return f"no interval: {few}; run at least 2 seeds per variant"
    if interval[0] <= 0 <= interval[1]:
        if interval == (0.0, 0.0):
            return "identical in every seed"
        seeds = str(a.n) if a.n == b.n else f"{a.n} and {b.n}"
        return f"within the noise: no difference shown with {seeds} seeds"
    high, low = (variants[1], variants[0]) if b.mean > a.mean else (variants[0], variants[1])
    way = direction(metric)
    if way == LOWER:
        return f"{low} is better (lower)"
    if way == HIGHER_TO_1:
        if min(a.mean, b.mean) >= 1:
            return f"{high} is higher, but both are at or above 1: no better side"
        return f"{high} is better (higher, toward 1)"
    return f"{high} is higher (no better side for this metric)"


def _variants(records: Sequence[Record], chosen: Sequence[str] | None) -> tuple[str, str]:
    found = sorted({r.variant for r in records}, key=lambda v: (v != "baseline", v))
    if chosen:
        missing = [v for v in chosen if v not in found]
        if len(chosen) != 2 or chosen[0] == chosen[1] or missing:
            raise UserError(f"variants {list(chosen)}: name two different variants that have "
                            f"finished runs; found {', '.join(found) or 'none'}")
        return chosen[0], chosen[1]
    if len(found) != 2:
        raise UserError(f"need finished runs of exactly two variants to compare, found "
                        f"{len(found)} ({', '.join(found) or 'none'}); run both, e.g. dvc exp run "
                        "--queue -S model.variant=baseline,fused -S train.seed=0,1,2, or pick two "
                        "with --variants")
    return found[0], found[1]


def summarize(records: Sequence[Record], *, confidence: float = 0.95,
              metrics: Sequence[str] | None = None,
              variants: Sequence[str] | None = None) -> Summary:
    """Compare two variants over seeds for every metric both have (or those matching ``metrics``,
    shell-style patterns). Non-finite values count as missing."""
    if not 0 < confidence < 1:
        raise UserError(f"confidence = {confidence} must lie strictly between 0 and 1, e.g. 0.95")
    if not records:
        raise UserError("no finished runs to compare; run the experiments first "
                        "(dvc exp run --queue ... then dvc queue start)")
    pair = _variants(records, variants)
    runs = sorted((r for r in records if r.variant in pair),
                  key=lambda r: (pair.index(r.variant), r.seed))
    for prev, rec in zip(runs, runs[1:]):
        if (prev.variant, prev.seed) == (rec.variant, rec.seed):
            raise UserError(f"runs {prev.name} and {rec.name} are both {rec.variant} seed "
                            f"{rec.seed}; a re-run is not another seed: remove one")
    names = sorted({k for r in runs for k in r.metrics})
    if metrics:
        names = [k for k in names if any(fnmatch.fnmatchcase(k, p) for p in metrics)]
        if not names:
            raise UserError(f"no metric matches {' '.join(metrics)}; available: "
                            f"{', '.join(sorted({k for r in runs for k in r.metrics}))}")
    rows = []
    for name in sorted(names, key=lambda k: (direction(k) is None, k)):
        side = []
        for variant in pair:
            pts = [(r.seed, r.metrics[name]) for r in runs
                   if r.variant == variant and math.isfinite(r.metrics.get(name, math.nan))]
            side.append(pts)
        if not all(side):
            continue
        a, b = (describe([s for s, _ in pts], [v for _, v in pts], confidence) for pts in side)
        diff, interval, df = welch(a, b, confidence)
        rows.append(Row(name, direction(name), (a, b), diff, interval, df,
                        verdict(name, pair, a, b, interval)))
    if not rows:
        raise UserError(f"no metric has finite values for both {pair[0]} and {pair[1]}")
    return Summary(pair, confidence, tuple(runs), tuple(rows))


# ---------------------------------------------------------------------------------------- output

def _num(x: float) -> str:
    return f"{x:.4g}"


def _cell(s: Stat) -> str:
    if s.ci is None:
        return f"{_num(s.mean)} ({s.n})"
    return f"{_num(s.mean)} ± {_num((s.ci[1] - s.ci[0]) / 2)} ({s.n})"


def align(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as fixed-width text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def render_text(summary: Summary) -> str:
    """A fixed-width table: mean ± interval half-width (seeds) per variant, difference, verdict."""
    first, second = summary.variants
    pct = f"{summary.confidence * 100:g}%"
    head = ("metric", f"{first} mean ± {pct} (n)", f"{second} mean ± {pct} (n)",
            f"{second} - {first} [{pct}]", "verdict")
    body = []
    for row in summary.rows:
        span = "[no interval]" if row.interval is None else \
            f"[{_num(row.interval[0])}, {_num(row.interval[1])}]"
        body.append((row.metric, _cell(row.stats[0]), _cell(row.stats[1]),
                     f"{_num(row.difference)} {span}", row.verdict))
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    rule = tuple("-" * w for w in widths)
    return align([head, rule, *body]) + (
        f"\n\n{len(summary.runs)} runs. Per variant: Student t interval of the mean over seeds. "
        f"Difference: Welch t interval.\n")


def to_dict(summary: Summary) -> dict:
    def stat(s: Stat) -> dict:
        return {"n": s.n, "mean": s.mean, "std": s.std, "ci": list(s.ci) if s.ci else None,
                "values": {str(seed): v for seed, v in zip(s.seeds, s.values)}}

    return {
        "variants": list(summary.variants),
        "confidence": summary.confidence,
        "runs": [{"name": r.name, "variant": r.variant, "seed": r.seed} for r in summary.runs],
        "metrics": {row.metric: {
            "direction": row.direction,
            **{v: stat(s) for v, s in zip(summary.variants, row.stats)},
            "difference": {"estimate": row.difference,
                           "interval": list(row.interval) if row.interval else None, "df": row.df},
            "verdict": row.verdict} for row in summary.rows},
    }


def render_png(summary: Summary) -> bytes:
    """One panel per key metric family (swd, fid, kid): each seed as a dot, mean with its interval;
    every metric gets a panel when none of those families is present."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[str, list[Row]] = {}
    for row in summary.rows:
        groups.setdefault(family(row.metric) or "", []).append(row)
    groups.pop("", None)
    if not groups:
        groups = {row.metric: [row] for row in summary.rows}
    cols = min(3, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.6 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    colours = ("tab:blue", "tab:orange")
    for i, (title, rows) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for j, row in enumerate(rows):
            for k, (variant, s) in enumerate(zip(summary.variants, row.stats)):
                x = j + (k - 0.5) * 0.35
                ax.scatter([x] * s.n, s.values, s=14, alpha=0.6, color=colours[k],
                           label=variant if j == 0 else None)
                err = None if s.ci is None else [[s.mean - s.ci[0]], [s.ci[1] - s.mean]]
                ax.errorbar([x + 0.08], [s.mean], yerr=err, fmt="D", ms=5, capsize=4,
                            color=colours[k])
        ax.set_xticks(range(len(rows)), [r.metric.rsplit(".", 1)[-1] for r in rows],
                      rotation=30 if len(rows) > 3 else 0)
        ax.set_title(title.upper() if title in KEY_FAMILIES else title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary.variants[1]} vs {summary.variants[0]}: seeds (dots), mean ± "
                 f"{summary.confidence * 100:g}% interval")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save(summary: Summary, out_dir: Path) -> list[Path]:
    """Write compare.json, compare.md and compare.png into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / "compare.json", out_dir / "compare.md", out_dir / "compare.png"]
    write_json(paths[0], to_dict(summary))
    first, second = summary.variants
    write_text(paths[1], f"# {second} vs {first}\n\n```\n{render_text(summary)}```\n\n"
                         "![seeds, means and intervals](compare.png)\n")
    write_bytes(paths[2], render_png(summary))
    return paths
