"""The study page's samples: new images from each generator that came back with the study.

The GPU study returns each arm's lowest-SWD study run's generator in fp16 (weights/ in the
study folder, catgan/generate/weightsfile.py). Its samples here are what ``catgan sample`` draws: a grid of
new latents and a latent walk, from the CPU, the same pixels for the same file and seed.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from catgan.generate import sample
from catgan.generate import weightsfile
from catgan.generate.trained import from_weights_file
from catgan.report.runpage import figure, side_by_side
from catgan.study.folder import WEIGHTS, Run, weights

COUNT, WALKS, STEPS, SEED, FPS = 64, 8, 8, 0, 4


def section(study_dir: Path, info: dict, runs: list[Run], figs: Path) -> str:
    """A grid and a latent walk per generator file; "" when none came with the study."""
    found = weights(study_dir / WEIGHTS)
    if not found:
        return ""
    by_name = {r.name: r for r in runs}
    data_hash = (info.get("data") or {}).get("content_hash")
    blocks, foreign = [], []
    for path in found.values():
        about, _ = weightsfile.read(path)
        run = by_name.get(about.get("run"))
        if run is None or about.get("data_hash") != data_hash:
            foreign.append(f"{path.name} (run {about.get('run')!r})")
            continue
        arm = run.meta["arm"]  # files from before arms are named by variant
        trained = from_weights_file(path)
        grid = sample.write_grid(sample.draw(trained, COUNT, SEED), figs / f"samples_{arm}.png")
        walk = sample.write_gif(sample.interpolate(trained, WALKS, STEPS, SEED),
                                figs / f"walk_{arm}.gif", FPS)
        swd = run.meta["eval"]["swd"]["swd_avg"]
        seeds = sum(r.meta["kind"] == "study" and r.meta["arm"] == arm for r in runs)
        where = (f"{arm}: {run.name}, eval SWD {swd:.1f}, the lowest of its {seeds} seeds; "
                 f"fp16 weights, {path.stat().st_size / 2**20:.1f} MiB")
        blocks.append(f"<div><h3>{escape(arm)}</h3>"
                      + figure(grid, f"{where}. {COUNT} new latents (seed {SEED}).", sheet=True)
                      + figure(walk, f"{WALKS} latent walks, {STEPS} steps of spherical "
                                     "interpolation each.", sheet=True) + "</div>")
    note = (f"<p>Not shown, as they belong to another study: {escape(', '.join(foreign))}.</p>"
            if foreign else "")
    return side_by_side(blocks) + note + (
        "<p>Each image depends on the whole batch it is drawn in (batch statistics, as in "
        f"training). <code>catgan sample FILE --grid</code> draws the same grid, <code>-n {WALKS} "
        f"--interpolate {STEPS}</code> the same walks; <code>--nearest --data images.npy</code> "
        "sets each image beside its nearest training image.</p>")
