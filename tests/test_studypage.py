"""The study page in catgan.studypage, on a small made-up study folder."""
from __future__ import annotations

import csv
import math
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catgan import studypage
from catgan.errors import UserError
from catgan.studydir import write_run_meta, write_study

HISTORY = ("epoch", "loss_d", "loss_g", "real_score", "fake_score", "g_grad_norm", "swd_avg",
           "swd_64", "swd_32", "swd_16", "fixed_real_score", "fixed_fake_score", "diversity_ratio")
STEPS = ("step", "epoch", "loss_d", "loss_g", "real_score", "fake_score", "g_grad_norm")
EPOCHS, STEPS_PER_EPOCH, GRID_PX = 4, 3, 66
BASELINE_SWD = {0: 40.2, 1: 43.7, 2: 41.9}
JITTER = {0: 0.3, 1: -0.5, 2: 0.8}
FIGURES = ("swd_epochs.png", "grids.png", "curves.png", "q1_gradients.png", "q1_gradnorm.png",
           "parity.png")


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows({c: "" if row.get(c) is None else row[c] for c in columns} for row in rows)


def add_run(root: Path, name: str, *, kind: str, variant: str, seed: int, swd: float,
            grad: float, rng: np.random.Generator) -> None:
    run = root / "runs" / name
    v = 1.0 if variant == "fused" else 0.0
    (run / "grids").mkdir(parents=True)
    write_run_meta(run, {
        "kind": kind, "variant": variant, "seed": seed,
        "g_loss": "saturating" if kind == "saturating" else "non_saturating",
        "epochs": EPOCHS, "steps": EPOCHS * STEPS_PER_EPOCH, "batch_size": 16,
        "images_seen": EPOCHS * STEPS_PER_EPOCH * 16, "wall_s": 30.0 + seed, "device": "cpu",
        "eval": {"swd": {"swd_64": swd * 1.2, "swd_32": swd, "swd_16": swd * 0.8, "swd_avg": swd},
                 "swd_real_floor": {"swd_avg": 3.1},
                 "scores": {"real": 0.7 + 0.01 * seed + 0.05 * v, "fake": 0.3 - 0.02 * seed},
                 "diversity": {"diversity_real": 1.0, "diversity_fake": 0.8 + 0.03 * seed + 0.1 * v,
                               "diversity_ratio": 0.8 + 0.03 * seed + 0.1 * v},
                 "inception": {"computed": 0}, "num_samples": 1000},
    })
    history = [{"epoch": e, "loss_d": 1.4 - (0.1 + 0.05 * v) * e + 0.01 * seed,
                "loss_g": 0.8 + (0.2 - 0.05 * v) * e + 0.02 * seed,
                "real_score": 0.5 + (0.05 + 0.02 * v) * e,
                "fake_score": 0.5 - (0.05 + 0.01 * v) * e,
                "g_grad_norm": grad,
                # quality only every other epoch: the odd ones stay blank
                **({"swd_avg": swd + 10.0 * (EPOCHS - e), "diversity_ratio": 0.9}
                   if e % 2 == 0 else {})}
               for e in range(1, EPOCHS + 1)]
    write_csv(run / "history.csv", HISTORY, history)
    steps = [{"step": s, "epoch": (s - 1) // STEPS_PER_EPOCH + 1, "loss_d": 1.0, "loss_g": 1.0,
              "real_score": 0.6, "fake_score": 0.4, "g_grad_norm": grad * (1 + 0.1 * (s % 3))}
             for s in range(1, EPOCHS * STEPS_PER_EPOCH + 1)]
    write_csv(run / "steps.csv", STEPS, steps)
    for epoch in range(EPOCHS + 1):
        pixels = rng.integers(0, 256, size=(GRID_PX, GRID_PX, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(run / "grids" / f"epoch_{epoch:03d}.png")


def make_study(root: Path, *, fused_shift: float = -12.0, extras: bool = True) -> Path:
    rng = np.random.default_rng(0)
    write_study(root, {"name": "tiny", "device": "cpu",
                       "data": {"content_hash": "abc123def", "images": 512, "source": "synthetic"},
                       "settings": {"train.epochs": EPOCHS, "train.batch_size": 16}})
    for variant in ("baseline", "fused"):
        for seed, swd in BASELINE_SWD.items():
            if variant == "fused":
                swd += fused_shift + JITTER[seed]
            add_run(root, f"{variant}-{seed}", kind="study", variant=variant, seed=seed, swd=swd,
                    grad=2.0 + seed, rng=rng)
    if extras:
        add_run(root, "fused-0-saturating", kind="saturating", variant="fused", seed=0, swd=80.0,
                grad=0.01, rng=rng)
        for seed, swd in ((0, 31.0), (1, 33.5)):
            add_run(root, f"fused-{seed}-course", kind="course", variant="fused", seed=seed,
                    swd=swd, grad=2.0, rng=rng)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("study"))
    figures = root / "figures"
    out = studypage.build_page(root, root / "page" / "index.html", figures)
    return root, out.read_text(encoding="utf-8"), figures


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def verdict(html: str) -> str:
    return re.search(r'<p class="verdict">(.*?)</p>', html, re.S).group(1)


class Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.sources += [v or "" for k, v in attrs if k in ("src", "href") and not
                         (v or "").startswith("#")]


def test_page_is_offline_and_holds_budget_and_compare_numbers(built):
    _, html, _ = built
    assert "http://" not in html and "https://" not in html
    parser = Sources()
    parser.feed(html)
    assert parser.sources and all(s.startswith("data:") for s in parser.sources)
    budget = section(html, "budget")
    assert "abc123def" in budget and "512 images" in budget
    # a header, then study baseline, study fused, saturating fused and course fused
    assert budget.count("<tr>") == 5 and "<td>saturating</td>" in budget
    compare = section(html, "compare")
    fused = [swd - 12.0 + JITTER[s] for s, swd in BASELINE_SWD.items()]
    for values in (BASELINE_SWD.values(), fused):
        assert f"<td class=\"num\">{statistics.fmean(values):.1f}</td>" in compare
    for metric in ("eval.swd.swd_avg", "eval.swd.swd_16", "eval.diversity.diversity_ratio",
                   "eval.scores.real", "eval.scores.fake"):
        assert f"<td>{metric}</td>" in compare


def test_verdict_follows_the_swd_difference(built, tmp_path):
    assert "fused is better than baseline at 95% with 3 seeds per variant" in verdict(built[1])
    assert "Diversity ratio" in verdict(built[1])
    root = make_study(tmp_path / "worse", fused_shift=+12.0, extras=False)
    worse = studypage.build_page(root, tmp_path / "worse.html").read_text(encoding="utf-8")
    assert "fused is worse than baseline" in verdict(worse)
    assert "better than" not in verdict(worse)
    root = make_study(tmp_path / "same", fused_shift=0.0, extras=False)
    same = studypage.build_page(root, tmp_path / "same.html").read_text(encoding="utf-8")
    assert "fused is not distinguishable from baseline at 95% with 3 seeds" in verdict(same)


def test_figures_are_written_and_decode(built):
    _, _, figures = built
    for name in FIGURES:
        with Image.open(figures / name) as image:
            image.load()
    with Image.open(figures / "grids.png") as grids:
        # 3 seeds down, 2 variants across, one label band on top and one on the left
        assert grids.size == (studypage.LABEL_W + 2 * (GRID_PX + studypage.GAP),
                              studypage.LABEL_H + 3 * (GRID_PX + studypage.GAP))


def test_progress_video_is_embedded(built):
    videos = section(built[1], "videos")
    assert videos.count('src="data:video/mp4;base64,') == 2
    assert "seed 0" in videos


def test_progress_falls_back_to_a_gif_without_ffmpeg(tmp_path, monkeypatch):
    def no_ffmpeg(*args, **kwargs):
        raise RuntimeError("no ffmpeg exe could be found")

    monkeypatch.setattr(studypage, "write_video", no_ffmpeg)
    root = make_study(tmp_path / "study", extras=False)
    videos = section(studypage.build_page(root, tmp_path / "p.html").read_text(), "videos")
    assert videos.count('src="data:image/gif;base64,') == 2
    assert "an animated GIF, as the mp4 failed" in videos and "<video" not in videos


def test_saturating_run_gets_measured_medians(built):
    q1 = section(built[1], "q1")
    pattern = [1 + 0.1 * (s % 3) for s in range(1, EPOCHS * STEPS_PER_EPOCH + 1)]
    # the saturating run is fused seed 0: its twin is the study run with grad 2.0
    assert f"non_saturating {statistics.median(2.0 * f for f in pattern):.3g}" in q1
    assert f"saturating {statistics.median(0.01 * f for f in pattern):.3g}" in q1
    assert q1.count('src="data:image/png;base64,') == 3  # theory, measured norms, both grids


def test_parity_compares_course_with_pipeline(built):
    parity = section(built[1], "parity")
    assert "<td>fused</td>" in parity and "<td>baseline</td>" not in parity
    pipeline = statistics.fmean(swd - 12.0 + JITTER[s] for s, swd in BASELINE_SWD.items())
    course = statistics.fmean((31.0, 33.5))
    assert f"{pipeline:.1f} [" in parity and f"{course:.1f} [" in parity
    assert f"{course - pipeline:+.1f} [" in parity
    assert "no difference beyond the noise" in parity  # 2 course seeds: a wide interval


def test_study_without_saturating_or_course_runs(tmp_path):
    root = make_study(tmp_path / "study", extras=False)
    html = studypage.build_page(root, tmp_path / "p.html", tmp_path / "figs").read_text()
    assert "The saturating run is missing" in html
    assert 'id="parity"' not in html
    assert not (tmp_path / "figs" / "parity.png").exists()
    assert (tmp_path / "figs" / "q1_gradients.png").is_file()


def test_missing_study_json_names_the_path(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "study.json"))):
        studypage.build_page(tmp_path, tmp_path / "p.html")
    assert not (tmp_path / "p.html").exists()


def test_g_loss_gradient_at_a_confident_discriminator():
    logit = torch.tensor([math.log(0.01 / 0.99)])
    saturating = studypage.g_loss_gradient(logit, "saturating").item()
    non_saturating = studypage.g_loss_gradient(logit, "non_saturating").item()
    assert abs(saturating) < 0.02 and abs(non_saturating) > 0.98
    assert saturating == pytest.approx(-0.01) and non_saturating == pytest.approx(-0.99)
