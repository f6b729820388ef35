"""One self-contained HTML page per run: every image and the video inlined, nothing fetched."""
from __future__ import annotations

import base64
import math
import re
from html import escape
from pathlib import Path

from catgan.config import flatten
from catgan.errors import UserError
from catgan.fileio import write_text

# The figures the page knows where to put; a caller may leave any of them out.
IMAGE_KEYS = ("dataset", "losses", "scores", "epoch0", "final")

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".webp": "image/webp", ".mp4": "video/mp4"}

CSS = """
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6672; --line: #d9dee3; --band: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; }
header { background: var(--band); border-bottom: 1px solid var(--line); padding: 1.25rem 1.5rem; }
header h1 { margin: 0 0 .4rem; font-size: 1.5rem; }
nav a { color: var(--muted); margin-right: 1rem; white-space: nowrap; text-decoration: none;
        font-size: .9rem; }
nav a:hover { color: var(--ink); text-decoration: underline; }
main { max-width: 1200px; margin: 0 auto; padding: 0 1.5rem 3rem; }
section { padding-top: 1.5rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem;
     margin: 0 0 1rem; }
h3 { font-size: 1rem; margin: 0 0 .5rem; }
.cols { display: grid; gap: 1.5rem; align-items: start;
        grid-template-columns: repeat(auto-fit, minmax(min(100%, 500px), 1fr)); }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .3rem; }
img, video { display: block; max-width: 100%; height: auto; }
img.sheet, video { image-rendering: pixelated; border: 1px solid var(--line); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
thead th { background: var(--band); }
tbody tr:nth-child(even) { background: #fafbfc; }
tfoot td { font-weight: 600; border-top: 2px solid var(--muted); border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.group { text-align: center; }
td:first-child { white-space: nowrap; }
code { font: .8rem/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
       overflow-wrap: anywhere; }
"""


def build_report(path: Path, *, title: str, images: dict[str, Path], video: Path | None,
                 layer_tables: dict[str, list[dict]], metrics: dict[str, dict]) -> None:
    """Write the run's report to ``path``; ``images`` keys are from IMAGE_KEYS."""
    unknown = sorted(set(images) - set(IMAGE_KEYS))
    if unknown:
        raise ValueError(f"unknown report image key(s) {unknown}; use {', '.join(IMAGE_KEYS)}")
    write_page(path, title, [
        ("dataset", "Training data", _figures(images, [("dataset", "A sample of the training set")],
                                              sheet=True)),
        ("networks", "Networks", _layer_tables(layer_tables)),
        ("curves", "Training curves", _figures(images, [("losses", "Losses"),
                                                        ("scores", "Discriminator scores")])),
        ("samples", "Samples from a fixed latent batch",
         _figures(images, [("epoch0", "Before training (epoch 0)"),
                           ("final", _final_caption(images.get("final")))], sheet=True)),
        ("video", "Samples, epoch by epoch", _video(video)),
        ("metrics", "Metrics", _metric_tables(metrics)),
    ])


def write_page(path: Path, title: str, sections: list[tuple[str, str, str]],
               lead: str = "") -> None:
    """A page of (anchor, heading, html) sections, empty ones left out, linked from its header."""
    sections = [s for s in sections if s[2]]
    # a space between links: where the header is narrower than the links, they wrap
    nav = " ".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{escape(name)}</h2>{html}</section>'
                   for anchor, name, html in sections)
    write_text(path, '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
               '<meta name="viewport" content="width=device-width, initial-scale=1">'
               f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
               f"<body><header><h1>{escape(title)}</h1><nav>{nav}</nav></header>\n"
               f"<main>{lead}{body}</main></body></html>\n")


def figure(path: Path, caption: str, sheet: bool = False) -> str:
    """An inlined image and its caption; a ``sheet`` of samples is drawn with sharp pixels."""
    klass = ' class="sheet"' if sheet else ""
    return (f'<figure><img{klass} src="{data_uri(path)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def side_by_side(blocks: list[str]) -> str:
    """``blocks`` side by side where the page is wide enough; "" when there are none."""
    return f'<div class="cols">{"".join(blocks)}</div>' if blocks else ""


def data_uri(path: Path) -> str:
    """``path`` as a base64 data URI, its type from its suffix."""
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        kind = path.suffix or "suffix-less"
        raise UserError(f"{path}: cannot embed a {kind} file in the report; "
                        f"use one of {', '.join(MIME)}")
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the stage that makes it first") from None
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def format_value(value: object) -> str:
    """Numbers readable at a glance: thousands separators, four decimals, scientific when tiny."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value) or value == 0:
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if abs(value) >= 1e-3:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _final_caption(path: Path | None) -> str:
    match = re.fullmatch(r"epoch_(\d+)", Path(path).stem) if path else None
    return f"After epoch {int(match.group(1))}" if match else "After training"


def _figures(images: dict[str, Path], wanted: list[tuple[str, str]], *, sheet: bool = False) -> str:
    return side_by_side([figure(images[key], caption, sheet)
                         for key, caption in wanted if key in images])


def _video(video: Path | None) -> str:
    if video is None:
        return ""
    return (f'<figure><video controls loop autoplay muted playsinline src="{data_uri(video)}">'
            "</video><figcaption>The fixed latent batch after each epoch; "
            "epoch 0 is the untrained generator.</figcaption></figure>")


def _layer_tables(tables: dict[str, list[dict]]) -> str:
    blocks = []
    for name, rows in tables.items():
        body = "".join(
            f'<tr><td class="num">{i}</td><td><code>{escape(str(row["layer"]))}</code></td>'
            f'<td class="num">{escape(" × ".join(str(d) for d in row["output_shape"]))}</td>'
            f'<td class="num">{row["params"]:,}</td></tr>'
            for i, row in enumerate(rows, start=1)
        )
        total = sum(row["params"] for row in rows)
        blocks.append(
            f'<div><h3>{escape(name)}</h3><div class="table-wrap"><table>'
            '<thead><tr><th class="num">#</th><th>Layer</th><th class="num">Output shape</th>'
            f'<th class="num">Params</th></tr></thead><tbody>{body}</tbody>'
            f'<tfoot><tr><td></td><td colspan="2">Total</td><td class="num">{total:,}</td></tr>'
            "</tfoot></table></div></div>"
        )
    return side_by_side(blocks)


def _metric_tables(metrics: dict[str, dict]) -> str:
    blocks = []
    for name, tree in metrics.items():
        body = "".join(f'<tr><td><code>{escape(key)}</code></td>'
                       f'<td class="num">{escape(format_value(value))}</td></tr>'
                       for key, value in flatten(tree).items())
        blocks.append(f'<div><h3>{escape(name)}</h3><div class="table-wrap"><table>'
                      '<thead><tr><th>Metric</th><th class="num">Value</th></tr></thead>'
                      f"<tbody>{body}</tbody></table></div></div>")
    return side_by_side(blocks)
