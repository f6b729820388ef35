"""A comparison as a text table, JSON, and a figure of seeds, means and intervals."""
from __future__ import annotations

import io
import math
from pathlib import Path

from catgan.fileio import write_bytes, write_json, write_text
from catgan.study.compare.stats import KEY_FAMILIES, Row, Stat, Summary, family
from catgan.study.table import align


def _num(x: float) -> str:
    return f"{x:.4g}"


def _cell(s: Stat) -> str:
    if s.identical:
        return f"{_num(s.mean)} ({s.n}, identical in every seed)"
    if s.ci is None:
        return f"{_num(s.mean)} ({s.n})"
    return f"{_num(s.mean)} ± {_num((s.ci[1] - s.ci[0]) / 2)} ({s.n})"


def render_text(summary: Summary) -> str:
    """A fixed-width table: mean ± interval half-width (seeds) per group, difference, verdict."""
    first, second = summary.groups
    pct = f"{summary.confidence * 100:g}%"
    head = ("metric", f"{first} mean ± {pct} (n)", f"{second} mean ± {pct} (n)",
            f"{second} - {first} [{pct}]", "verdict")
    body = []
    for row in summary.rows:
        span = "[no interval]" if row.interval is None else \
            f"[{_num(row.interval[0])}, {_num(row.interval[1])}]"
        body.append((row.metric, _cell(row.stats[0]), _cell(row.stats[1]),
                     f"{_num(row.difference)} {span}", row.verdict))
    return align([head, *body], rule=True) + (
        f"\n\n{len(summary.runs)} runs. Per variant: Student t interval of the mean over seeds. "
        f"Difference: Welch t interval.\n")


def to_dict(summary: Summary) -> dict:
    def stat(s: Stat) -> dict:
        return {"n": s.n, "mean": s.mean, "std": s.std, "ci": list(s.ci) if s.ci else None,
                "values": {str(seed): v for seed, v in zip(s.seeds, s.values)}}

    return {
        "variants": list(summary.groups),
        "confidence": summary.confidence,
        "runs": [{"name": r.name, "variant": r.group, "seed": r.seed} for r in summary.runs],
        "metrics": {row.metric: {
            "direction": row.direction,
            **{v: stat(s) for v, s in zip(summary.groups, row.stats)},
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
            for k, (group, s) in enumerate(zip(summary.groups, row.stats)):
                x = j + (k - 0.5) * 0.35
                ax.scatter([x] * s.n, s.values, s=14, alpha=0.6, color=colours[k],
                           label=group if j == 0 else None)
                err = None if s.ci is None else [[s.mean - s.ci[0]], [s.ci[1] - s.mean]]
                ax.errorbar([x + 0.08], [s.mean], yerr=err, fmt="D", ms=5, capsize=4,
                            color=colours[k])
        ax.set_xticks(range(len(rows)), [r.metric.rsplit(".", 1)[-1] for r in rows],
                      rotation=30 if len(rows) > 3 else 0)
        ax.set_title(title.upper() if title in KEY_FAMILIES else title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary.groups[1]} vs {summary.groups[0]}: seeds (dots), mean ± "
                 f"{summary.confidence * 100:g}% interval")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save(summary: Summary, out_dir: Path) -> list[Path]:
    """Write compare.json, compare.md and compare.png into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / "compare.json", out_dir / "compare.md", out_dir / "compare.png"]
    write_json(paths[0], to_dict(summary))
    first, second = summary.groups
    write_text(paths[1], f"# {second} vs {first}\n\n```\n{render_text(summary)}```\n\n"
                         "![seeds, means and intervals](compare.png)\n")
    write_bytes(paths[2], render_png(summary))
    return paths
