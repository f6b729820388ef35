"""The study page: which arm (catgan/study/arms.py) draws the better cats, over seeds? One self-contained
HTML file; each arm against each earlier one.

Built from a study folder (catgan.study.folder); every figure and video is inlined.
"""
from __future__ import annotations

import statistics
import tempfile
from html import escape
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from catgan.config import flat_numbers
from catgan.errors import UserError
from catgan.fileio import atomic_path
from catgan.images import save_png
from catgan.model.losses import g_loss
from catgan.report.plots import write_video
from catgan.report.runpage import data_uri, figure, side_by_side, write_page
from catgan.study import arms
from catgan.study import provenance
from catgan.study import samples as studysamples
from catgan.study.compare import render, stats
from catgan.study.compare.runs import Record
from catgan.study.folder import KINDS, WEIGHTS, Run, load_study, weights

CONFIDENCE = 0.95
METRICS = ("eval.swd.*", "eval.diversity.*", "eval.scores.*")
KEY_METRIC, DIVERSITY = "eval.swd.swd_avg", "eval.diversity.diversity_ratio"
LABEL_W, LABEL_H, GAP, FONT_SIZE = 72, 24, 4, 14  # the grids composite's label bands
DPI, FPS = 110, 4
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")
LABELS = {"diversity_ratio": "diversity ratio", "diversity_fake": "diversity, fakes",
          "diversity_real": "diversity, reals", "real": "D(real)", "fake": "D(G(z))"}


def build_page(study_dir: Path, out_html: Path, figures_dir: Path | None = None) -> Path:
    """Write the study page to ``out_html``; with ``figures_dir``, keep its figures there too."""
    study_dir, out_html = Path(study_dir), Path(out_html)
    info, runs = load_study(study_dir)
    kinds = {kind: [r for r in runs if r.meta["kind"] == kind] for kind in KINDS}
    if not kinds["study"]:
        raise UserError(f"{study_dir / 'runs'}: no run of kind 'study'; run the study first")
    summaries = study_summaries(kinds["study"])
    order = arms.ordered({r.meta["arm"] for r in kinds["study"]})
    groups = {a: [r for r in kinds["study"] if r.meta["arm"] == a] for a in order}
    with tempfile.TemporaryDirectory() as tmp:
        figs = Path(figures_dir) if figures_dir else Path(tmp)
        title = f"Study {info.get('name', study_dir.name)}: {' vs '.join(order)}"
        write_page(out_html, title, [
            ("budget", "Budget", _budget(info, runs)),
            ("compare", "The arms over seeds, each against each earlier one",
             "".join(_compare_table(s) for s in summaries)),
            ("swd", "SWD over epochs", _swd_figure(groups, figs / "swd_epochs.png")),
            ("curves", "Losses and D scores", _curves_figure(groups, figs / "curves.png")),
            ("grids", "Final fixed-latent grids", _grids(groups, figs / "grids.png")),
            ("videos", "Progress, epoch by epoch", _videos(groups, Path(tmp))),
            ("q1", "Why the generator maximises log D(G(z))", _q1(kinds, figs)),
            ("parity", "Parity with the course loop", _parity(groups, kinds["course"], figs)),
            ("samples", "Samples from the returned generators",
             studysamples.section(study_dir, info, runs, figs)),
            ("provenance", "Provenance", _provenance(info, runs)),
            ("reproduce", "How to reproduce", _reproduce(info)),
        ], lead="".join(map(_verdict, summaries)) + _missing(info, study_dir))
    return out_html


def study_summaries(runs: list[Run]) -> list[stats.Summary]:
    """catgan compare's statistics over the study runs' final eval metrics, one per pair of arms:
    each arm against each earlier one (fused - baseline, modern - baseline, modern - fused)."""
    records = [Record(r.name, r.meta["arm"], r.meta["seed"],
                      flat_numbers(r.meta.get("eval") or {}, "eval."))
               for r in runs]
    order = arms.ordered({r.group for r in records})
    if len(order) < 2:
        raise UserError(f"study runs of {len(order)} arm ({', '.join(order)}): a study compares "
                        "at least two; run it with two arms or more (--arms)")
    return [stats.summarize(records, confidence=CONFIDENCE, metrics=METRICS, groups=(a, b))
            for j, b in enumerate(order) for a in order[:j]]


def g_loss_gradient(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """d(loss_G)/d(logit) for each logit, by autograd through catgan.model.losses.g_loss."""
    x = logits.detach().float().clone().requires_grad_(True)
    # g_loss averages over the batch; scaled back up, each logit gets its own sample's gradient.
    (g_loss(x, kind) * x.numel()).backward()
    return x.grad


# ------------------------------------------------------------------------------------ text parts

def _fmt(metric: str, x: float) -> str:
    return f"{x:.1f}" if "swd" in metric else f"{x:.3f}"


def _span(metric: str, ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{_fmt(metric, ci[0])}, {_fmt(metric, ci[1])}]"


def _table(head: list[str], rows: list[list[str | tuple[str, str]]], text_cols: int = 1,
           groups: list[tuple[str, int]] | None = None) -> str:
    """Cells are plain text, or (text, tooltip); all but the first ``text_cols`` (and the last) are
    right-aligned. ``groups``: (heading, columns spanned) for a header row above ``head``."""
    def cls(i: int, n: int) -> str:
        return "" if i < text_cols or i == n - 1 else ' class="num"'

    def td(i: int, n: int, cell: str | tuple[str, str]) -> str:
        text, tip = cell if isinstance(cell, tuple) else (cell, "")
        title = f' title="{escape(tip)}"' if tip else ""
        return f"<td{cls(i, n)}{title}>{escape(text)}</td>"

    top = "".join(f'<th colspan="{n}" class="group">{escape(h)}</th>' if n > 1 else
                  f"<th>{escape(h)}</th>" for h, n in groups or [])
    th = "".join(f"<th{cls(i, len(head))}>{escape(h)}</th>" for i, h in enumerate(head))
    tr = "".join("<tr>" + "".join(td(i, len(r), c) for i, c in enumerate(r)) + "</tr>"
                 for r in rows)
    top = f"<tr>{top}</tr>" if top else ""
    return (f'<div class="table-wrap"><table><thead>{top}<tr>{th}</tr></thead>'
            f"<tbody>{tr}</tbody></table></div>")


def _side(interval: tuple[float, float] | None) -> int | None:
    """-1 if the interval lies below 0, 1 if above, 0 if it holds 0, None if there is none."""
    if interval is None:
        return None
    return -1 if interval[1] < 0 else int(interval[0] > 0)


def _verdict(summary: stats.Summary) -> str:
    a, b = map(arms.label, summary.groups)
    rows = {row.metric: row for row in summary.rows}
    row = rows.get(KEY_METRIC)
    if row is None:
        return f"<p><strong>No verdict:</strong> no run has {KEY_METRIC}.</p>"
    sa, sb = row.stats
    claim = {None: f"{b} cannot be judged against {a} (an interval needs 2 seeds per arm)",
             -1: f"{b} is better than {a}", 1: f"{b} is worse than {a}",
             0: f"{b} is not distinguishable from {a}"}[_side(row.interval)]
    seeds = str(sa.n) if sa.n == sb.n else f"{sa.n} and {sb.n}"
    text = (f"{claim} at {summary.confidence:.0%} with {seeds} seeds per arm, on the "
            f"sliced Wasserstein distance to the real images (SWD x1e3, lower is better): {b} "
            f"{sb.mean:.1f}, {a} {sa.mean:.1f}, difference {row.difference:+.1f} "
            f"{_span(KEY_METRIC, row.interval)}.")
    div = rows.get(DIVERSITY)
    if div:
        text += (f" Diversity ratio (the fakes' spread over the reals', best toward 1): {a} "
                 f"{div.stats[0].mean:.3f}, {b} {div.stats[1].mean:.3f}; {div.verdict}.")
    return f'<p class="verdict"><strong>{escape(b)} vs {escape(a)}:</strong> {escape(text)}</p>'


def _budget(info: dict, runs: list[Run]) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run.meta["kind"], arms.label(run.meta["arm"])), []).append(run.meta)
    rows = [[kind, arm, str(len(ms)), ", ".join(sorted({str(m.get("epochs")) for m in ms})),
             f"{sum(m.get('steps', 0) for m in ms):,}",
             f"{sum(m.get('images_seen', 0) for m in ms):,}",
             f"{statistics.fmean(m.get('wall_s', 0) for m in ms) / 60:.1f} min",
             ", ".join(sorted({str(m.get("device")) for m in ms}))]
            for (kind, arm), ms in groups.items()]
    table = _table(["kind", "arm", "runs", "epochs per run", "steps, all runs",
                    "images seen, all runs", "mean wall time", "device"], rows, text_cols=2)
    data = info.get("data") or {}
    return (table + f"<p>Data: {data.get('images', 0):,} images from "
            f"{escape(str(data.get('source', '?')))}, content hash "
            f"<code>{escape(str(data.get('content_hash', '?')))}</code>. "
            f"Study device: {escape(str(info.get('device', '?')))}.</p>")


def _compare_table(summary: stats.Summary) -> str:
    a, b = map(arms.label, summary.groups)
    pct = f"{summary.confidence:.0%}"
    rows = []
    for row in summary.rows:
        m = row.metric
        cells: list[str | tuple[str, str]] = [(label(m), m)]
        for s in row.stats:
            cells += [_fmt(m, s.mean), "–" if s.std is None else _fmt(m, s.std),
                      "identical" if s.identical else _span(m, s.ci)]
        diff = ("+" if row.difference >= 0 else "") + _fmt(m, row.difference)
        rows.append(cells + [f"{diff} {_span(m, row.interval)}", row.verdict])
    # The arms' names head their column groups; the difference's header stays short so the
    # verdict keeps its room at 1300 px.
    head = ["metric", *(["mean", "sd", f"{pct} interval"] * 2), f"difference [Welch {pct}]",
            "verdict"]
    groups = [("", 1), (a, 3), (b, 3), ("", 2)]
    return f"<h3>{escape(b)} vs {escape(a)}</h3>" + _table(head, rows, groups=groups) + (
        f"<p>{len(summary.runs)} study runs. Difference: {escape(b)} − {escape(a)}. sd: the "
        f"seed-to-seed standard deviation; intervals: "
        f"Student t over seeds, Welch t for the difference; identical: the same value in every "
        f"seed. SWD is x1e3, lower is better; the diversity ratio is best toward 1; D(real) and "
        f"D(G(z)) are the discriminator's mean sigmoid on real and generated images. Hover a "
        f"metric for its key in eval.json.</p>")


def label(metric: str) -> str:
    """A short name for an eval metric's key, as the page's tables show it."""
    leaf = metric.rsplit(".", 1)[-1]
    if leaf.startswith("swd_"):
        scale = leaf.removeprefix("swd_")
        return "SWD, average" if scale == "avg" else f"SWD, {scale} px"
    return LABELS.get(leaf, leaf.replace("_", " "))


def _missing(info: dict, study_dir: Path) -> str:
    """One line on what an older or partial study folder lacks; "" when it lacks nothing."""
    lacks = []
    if not info.get("provenance"):
        lacks.append("no provenance (commit or code hash, versions, command line, wall time)")
    if not weights(study_dir / WEIGHTS):
        lacks.append("no generator weights (<archive>.generator-<arm>.pt beside its archive), "
                     "so no samples")
    if not lacks:
        return ""
    return (f'<p class="missing">This study folder (format {info.get("format")}) has '
            f'{escape(" and ".join(lacks))}.</p>')


def _provenance(info: dict, runs: list[Run]) -> str:
    made = info.get("provenance")
    if not made:
        return ""
    code = made["code"]
    rows = [["code", provenance.code_line(code)], ["content hash", code["content_hash"]]]
    if code.get("note"):
        rows.append(["note", code["note"]])
    rows += [["versions", f"Python {made['python']}, torch {made['torch']}, CUDA "
                          f"{made['cuda'] or 'none'}, cuDNN {made['cudnn'] or 'none'}"],
             ["device", made["device"]], ["command", made["command"]],
             ["date", made["date"]],
             ["wall time", "–" if made.get("wall_s") is None else f"{made['wall_s']:,.1f} s, "
                           "the command that wrote this folder"]]
    other = sorted({r.name for r in runs if r.meta.get("code") not in (None, code["content_hash"])})
    if other:
        rows.append(["other code", f"{', '.join(other)}: trained by another version of the code "
                                   "(an earlier call of a resumed study)"])
    return _table(["what", "value"], rows, text_cols=2) + (
        "<p>Where the study ran without a git checkout of this project, "
        "<code>python -m catgan.study.provenance</code> in a checkout prints its code's content hash "
        "to compare with.</p>")


def _reproduce(info: dict) -> str:
    settings = " ".join(f"{k}={v}" for k, v in sorted((info.get("settings") or {}).items()))
    parent = f" MLflow parent run <code>{escape(str(info['parent_run_id']))}</code>." \
        if info.get("parent_run_id") else ""
    return (f"<p>Run <code>catgan study</code> (or <code>benchmarks/gpu_study.sh</code> on a GPU) "
            f"on the same data with these settings: <code>{escape(settings or 'defaults')}</code>."
            f"{parent}</p>")


# -------------------------------------------------------------------------------------- figures

def _axes(width: float = 7.0, panels: int = 1):
    fig = Figure(figsize=(width, 4.4), layout="constrained")
    return fig, fig.subplots(1, panels)


def _save(fig: Figure, path: Path) -> None:
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def _plot_mean(ax, runs: list[Run], key: str, **style) -> list[tuple[float, stats.Stat]]:
    """Plot ``key``'s mean over the seeds per epoch where any measured it; returns those stats."""
    found: dict[float, list[tuple[int, float]]] = {}
    for run in runs:
        for row in run.history:
            if row.get(key) is not None:
                found.setdefault(row["epoch"], []).append((run.meta["seed"], row[key]))
    per_epoch = [(e, stats.describe(*zip(*pts), CONFIDENCE)) for e, pts in sorted(found.items())]
    ax.plot([e for e, _ in per_epoch], [s.mean for _, s in per_epoch], **style)
    return per_epoch


def _swd_figure(groups: dict[str, list[Run]], path: Path) -> str:
    fig, ax = _axes()
    for color, (arm, runs) in zip(COLORS, groups.items()):
        for run in runs:
            _plot_mean(ax, [run], "swd_avg", color=color, alpha=0.25, linewidth=0.8)
        per_epoch = _plot_mean(ax, runs, "swd_avg", color=color, marker="o", markersize=3,
                               linewidth=2, label=f"{arm}: mean of {len(runs)} seeds")
        band = [(e, s.ci) for e, s in per_epoch if s.ci]
        if band:
            ax.fill_between([e for e, _ in band], [c[0] for _, c in band], [c[1] for _, c in band],
                            color=color, alpha=0.2, label=f"{arm}: {CONFIDENCE:.0%} t interval")
    ax.set(xlabel="epoch", ylabel="SWD x1e3 (lower is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)
    return figure(path, "Mean SWD over seeds with its t interval; faint lines are single seeds.")


def _curves_figure(groups: dict[str, list[Run]], path: Path) -> str:
    fig, axes = _axes(12, 2)
    panels = [("loss", [("loss_d", "D loss"), ("loss_g", "G loss")]),
              ("mean sigmoid(D)", [("real_score", "D(real)"), ("fake_score", "D(G(z))")])]
    for ax, (ylabel, series) in zip(axes, panels):
        for color, (arm, runs) in zip(COLORS, groups.items()):
            for (key, label), style in zip(series, ("-", "--")):
                _plot_mean(ax, runs, key, color=color, linestyle=style, label=f"{arm} {label}")
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)
    return figure(path, "Epoch means from history.csv, averaged over seeds.")


def _q1(kinds: dict[str, list[Run]], figs: Path) -> str:
    logits = torch.linspace(-8, 8, 401)
    fig, ax = _axes(6.4)
    for color, kind in zip(COLORS, ("non_saturating", "saturating")):
        ax.plot(torch.sigmoid(logits), g_loss_gradient(logits, kind), color=color, label=kind)
    ax.set(xlabel="D(G(z)) = sigmoid(logit)", ylabel="d loss_G / d logit")
    _save(fig, figs / "q1_gradients.png")
    html = figure(figs / "q1_gradients.png", "Early in training D rejects the fakes (D(G(z)) near "
                  "0): there the saturating loss's gradient vanishes, the non-saturating one's is "
                  "near -1.")
    sat = next(iter(kinds["saturating"]), None)
    if sat is None:
        return html + "<p>The saturating run is missing, so only the theory is shown.</p>"
    twin = next((r for r in kinds["study"] if (r.meta["arm"], r.meta["seed"])
                 == (sat.meta["arm"], sat.meta["seed"])), None)
    if twin is None or not (sat.steps and twin.steps):
        return html + (f"<p>The saturating run {escape(sat.name)} has no study run of the same "
                       "arm and seed, or no step log, to compare with.</p>")
    return html + _q1_measured(sat, twin, figs)


def _q1_measured(sat: Run, twin: Run, figs: Path) -> str:
    """The saturating run's G gradient norms and final grid against its non-saturating twin's."""
    last = max(row["epoch"] for row in sat.steps)
    fig, ax = _axes()
    medians = {}
    for color, run in zip(COLORS, (twin, sat)):
        rows = [row for row in run.steps if row["epoch"] <= last]
        label = run.meta["loss"]
        medians[label] = statistics.median(row["g_grad_norm"] for row in rows)
        ax.plot([row["step"] for row in rows], [row["g_grad_norm"] for row in rows], color=color,
                label=label)
    ax.set(xlabel="step", ylabel="G gradient norm", yscale="log")
    _save(fig, figs / "q1_gradnorm.png")
    where = f"{sat.meta['arm']} seed {sat.meta['seed']}, epochs up to {last:g}"
    text = "; ".join(f"{k} {v:.3g}" for k, v in medians.items())
    html = (figure(figs / "q1_gradnorm.png", f"G's gradient norm per logged step ({where}).")
            + f"<p>Measured median G gradient norm ({escape(where)}): {escape(text)}.</p>")
    grids = _composite([[r.grids[-1] if r.grids else None for r in (twin, sat)]],
                       [f"seed {sat.meta['seed']}"], list(medians), figs / "q1_grids.png")
    return html + (figure(grids, "The final grids of both runs.", sheet=True) if grids else "")


def _swd_stat(runs: list[Run]) -> stats.Stat | None:
    """The final eval SWD over ``runs``' seeds; None if none has one."""
    pts = [(r.meta["seed"], x) for r in runs
           if (x := ((r.meta.get("eval") or {}).get("swd") or {}).get("swd_avg")) is not None]
    return stats.describe(*zip(*pts), CONFIDENCE) if pts else None


def _parity(groups: dict[str, list[Run]], course: list[Run], figs: Path) -> str:
    if not course:
        return ""
    variants = sorted({r.meta["variant"] for r in course})
    fig, ax = _axes(6.4)
    # course minus pipeline SWD: below zero means the pipeline's SWD is the higher one
    words = {None: "too few seeds to tell", -1: "the pipeline is worse beyond the noise",
             1: "the pipeline is better beyond the noise", 0: "no difference beyond the noise"}
    rows = []
    for x, variant in enumerate(variants):
        sides = (_swd_stat(groups.get(arms.course_arm(variant).name, [])),
                 _swd_stat([r for r in course if r.meta["variant"] == variant]))
        for k, (name, s) in enumerate(zip(("pipeline", "course"), sides)):
            if s:
                at = x + (k - 0.5) * 0.3
                ax.scatter([at] * s.n, s.values, color=COLORS[k], alpha=0.6,
                           label=name if x == 0 else None)
                err = None if s.ci is None else [[s.mean - s.ci[0]], [s.ci[1] - s.mean]]
                ax.errorbar([at + 0.06], [s.mean], yerr=err, fmt="D", capsize=4, color=COLORS[k])
        cells = ["–" if s is None else f"{s.mean:.1f} {_span('swd', s.ci)} (seeds "
                 f"{', '.join(f'{i}: {v:.1f}' for i, v in zip(s.seeds, s.values))})" for s in sides]
        diff, interval, _ = stats.welch(*sides, CONFIDENCE) if all(sides) else (None, None, None)
        rows.append([variant, *cells, "–" if diff is None else
                     f"{diff:+.1f} {_span('swd', interval)}",
                     words[_side(interval)] if all(sides) else "a side has no run"])
    ax.set(ylabel="eval SWD x1e3 (lower is better)", xticks=range(len(variants)),
           xticklabels=variants, xlim=(-0.6, len(variants) - 0.4))
    _save(fig, figs / "parity.png")
    pct = f"{CONFIDENCE:.0%}"
    head = ["variant", f"pipeline mean [{pct}] (per seed)", f"course mean [{pct}] (per seed)",
            f"course − pipeline [Welch {pct}]", "in words"]
    return _table(head, rows) + figure(
        figs / "parity.png", "Eval SWD per seed (dots), mean and interval (diamonds).")


# ------------------------------------------------------------------------------ grids and videos

def _rgb(png: Path) -> Image.Image:
    with Image.open(png) as image:
        return image.convert("RGB")


def _composite(cells: list[list[Path | None]], rows: list[str], cols: list[str],
               path: Path) -> Path | None:
    """Grids side by side, a label above each column and left of each row; None if none exist."""
    found = [p for row in cells for p in row if p]
    if not found:
        return None
    w, h = _rgb(found[0]).size
    font = ImageFont.load_default(FONT_SIZE)
    # a column is never narrower than its label, so small grids keep readable headings
    cw = max([w] + [int(font.getlength(c)) + GAP for c in cols])
    sheet = Image.new("RGB", (LABEL_W + len(cols) * (cw + GAP), LABEL_H + len(rows) * (h + GAP)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(cols):
        x = LABEL_W + j * (cw + GAP) + cw / 2
        draw.text((x, LABEL_H / 2), name, "black", font, anchor="mm")
    for i, (name, row) in enumerate(zip(rows, cells)):
        y = LABEL_H + i * (h + GAP)
        draw.text((LABEL_W / 2, y + h / 2), name, "black", font, anchor="mm")
        for j, png in enumerate(row):
            if png:
                x = LABEL_W + j * (cw + GAP) + (cw - w) // 2
                sheet.paste(_rgb(png).resize((w, h)), (x, y))
    save_png(sheet, path)
    return path


def _grids(groups: dict[str, list[Run]], path: Path) -> str:
    seeds = sorted({r.meta["seed"] for runs in groups.values() for r in runs})
    last = {(r.meta["arm"], r.meta["seed"]): r.grids[-1] for runs in groups.values()
            for r in runs if r.grids}
    made = _composite([[last.get((v, s)) for v in groups] for s in seeds],
                      [f"seed {s}" for s in seeds], list(groups), path)
    if not made:
        return "<p>No study run saved a grid.</p>"
    return figure(made, "The last epoch's fixed-latent grid of every study run.", sheet=True)


def _progress(frames: list[Path], stem: Path) -> tuple[str, str]:
    """The frames as an mp4 <video>, or as an animated GIF where ffmpeg is missing; and which."""
    video = stem.with_suffix(".mp4")
    try:
        write_video(frames, video, fps=FPS)
        return f'<video controls loop muted playsinline src="{data_uri(video)}"></video>', "mp4"
    except (ImportError, RuntimeError, OSError) as err:  # no ffmpeg: a GIF needs only PIL
        gif = stem.with_suffix(".gif")
        images = [_rgb(p) for p in frames]
        with atomic_path(gif, suffix=".gif") as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=1000 // FPS, loop=0)
        return (f'<img class="sheet" src="{data_uri(gif)}" alt="progress">',
                f"an animated GIF, as the mp4 failed ({type(err).__name__}: {err})")


def _videos(groups: dict[str, list[Run]], tmp: Path) -> str:
    blocks = []
    for arm, runs in groups.items():
        run = runs[0]  # the lowest seed: load_study sorts by seed
        if run.grids:
            media, how = _progress(run.grids, tmp / arm)
            caption = (f"{arm}, seed {run.meta['seed']}: the fixed latent batch after each of "
                       f"{len(run.grids) - 1} epochs (epoch 0 is untrained); {how}.")
            blocks.append(f"<figure>{media}<figcaption>{escape(caption)}</figcaption></figure>")
    return side_by_side(blocks) or "<p>No grids saved.</p>"


def publish(study_dir: Path) -> Path:
    """``study_dir``'s page and figures beside it, the compare table printed, the page's path last."""
    page = build_page(study_dir, study_dir / "study.html", figures_dir=study_dir / "figures")
    runs = [r for r in load_study(study_dir)[1] if r.meta["kind"] == "study"]
    for summary in study_summaries(runs):
        print(render.render_text(summary))
    print(f"study page: {page}")
    return page
