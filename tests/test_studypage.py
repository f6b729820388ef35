"""The study page in catgan.study.page, on a small made-up study folder."""
from __future__ import annotations

import csv
import json
import math
import re
import statistics
import warnings
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catgan.errors import UserError
from catgan.generate import weightsfile
from catgan.model.nets import build
from catgan.study import page as studypage
from catgan.study.compare.render import render_text
from catgan.fileio import write_json
from catgan.study import arms
from catgan.study.folder import WEIGHTS, load_study, run_meta, weights_name, write_study

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
            grad: float, rng: np.random.Generator, arm: str | None = None) -> None:
    """A run as the GPU study writes it (folder.run_meta); without ``arm``, as before arms
    (format 2: its variant only, and G's loss as g_loss)."""
    run = root / "runs" / name
    v = 1.0 if variant == "fused" else 0.0
    (run / "grids").mkdir(parents=True)
    loss = "saturating" if kind == "saturating" else "non_saturating"
    common = dict(
        epochs=EPOCHS, steps=EPOCHS * STEPS_PER_EPOCH, batch_size=16,
        images_seen=EPOCHS * STEPS_PER_EPOCH * 16, wall_s=30.0 + seed, device="cpu",
        eval={"swd": {"swd_64": swd * 1.2, "swd_32": swd, "swd_16": swd * 0.8, "swd_avg": swd},
              "swd_real_floor": {"swd_avg": 3.1},
              "scores": {"real": 0.7 + 0.01 * seed + 0.05 * v, "fake": 0.3 - 0.02 * seed},
              "diversity": {"diversity_real": 1.0, "diversity_fake": 0.8 + 0.03 * seed + 0.1 * v,
                            "diversity_ratio": 0.8 + 0.03 * seed + 0.1 * v},
              "inception": {"computed": 0}, "num_samples": 1000})
    loss = arms.get(arm).overrides.get("train.loss", loss) if arm else loss
    write_json(run / "run.json", run_meta(kind, arm, seed, loss=loss, **common) if arm else
               {"kind": kind, "variant": variant, "seed": seed, "g_loss": loss, **common})
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


# As the GPU study records it on a copy of the tree without .git (catgan/study/provenance.py).
MADE_BY = {"code": {"commit": None, "clean": None, "content_hash": "c0de" * 16,
                    "hashed": "catgan/, stages/, benchmarks/",
                    "note": "no git checkout of this project at /tmp/x (a copy of its files)"},
           "python": "3.11.7", "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91300,
           "device": "cuda: NVIDIA H200", "command": "python -m benchmarks.gpu_study --data z.zip",
           "date": "2026-12-04T17:31:00+00:00", "wall_s": 438.3}


def add_weights(root: Path, name: str, run: str, data_hash: str = "abc123def") -> Path:
    """A generator file as the GPU study leaves it: random weights of ``run``'s variant, fp16."""
    torch.manual_seed(len(run))
    variant = run.split("-")[0]
    generator, _ = build(variant, 128, "default")
    path = root / WEIGHTS / weights_name(name)
    weightsfile.write(path, generator, {"variant": variant, "latent_dim": 128, "run": run,
                                        "seed": int(run[-1]), "data_hash": data_hash})
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("study"))
    info = json.loads((root / "study.json").read_text())
    write_study(root, {**info, "provenance": MADE_BY})
    meta = json.loads((root / "runs" / "fused-2" / "run.json").read_text())
    write_json(root / "runs" / "fused-2" / "run.json", {**meta, "code": "an earlier version"})
    add_weights(root, "fused", "fused-1")
    add_weights(root, "extra", "fused-0", data_hash="another study's")
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
    for metric, label in (("eval.swd.swd_avg", "SWD, average"), ("eval.swd.swd_16", "SWD, 16 px"),
                          ("eval.diversity.diversity_ratio", "diversity ratio"),
                          ("eval.scores.real", "D(real)"), ("eval.scores.fake", "D(G(z))")):
        assert f'<td title="{metric}">{html_escape(label)}</td>' in compare


def test_a_metric_identical_in_every_seed_says_so_without_a_warning(tmp_path):
    """The real set's diversity is the same in every seed: no nan, no scipy RuntimeWarning."""
    root = make_study(tmp_path / "study", extras=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html = studypage.build_page(root, tmp_path / "p.html").read_text(encoding="utf-8")
        summary, = studypage.study_summaries(load_study(root)[1])
        text = render_text(summary)
    row = re.search(r'<tr><td title="eval.diversity.diversity_real">.*?</tr>', section(html, "compare"))
    assert row and row.group(0).count("<td class=\"num\">identical</td>") == 2
    assert "identical in every seed</td></tr>" in row.group(0)
    line = next(line for line in text.splitlines() if line.startswith("eval.diversity.diversity_real"))
    assert line.count("1 (3, identical in every seed)") == 2 and "nan" not in text


def test_verdict_follows_the_swd_difference(built, tmp_path):
    assert ("course-fused is better than course-baseline at 95% with 3 seeds per arm"
            in verdict(built[1]))
    assert "Diversity ratio" in verdict(built[1])
    root = make_study(tmp_path / "worse", fused_shift=+12.0, extras=False)
    worse = studypage.build_page(root, tmp_path / "worse.html").read_text(encoding="utf-8")
    assert "course-fused is worse than course-baseline" in verdict(worse)
    assert "better than" not in verdict(worse)
    root = make_study(tmp_path / "same", fused_shift=0.0, extras=False)
    same = studypage.build_page(root, tmp_path / "same.html").read_text(encoding="utf-8")
    assert "course-fused is not distinguishable from course-baseline at 95% with 3 seeds" in \
        verdict(same)


def test_figures_are_written_and_decode(built):
    _, _, figures = built
    for name in FIGURES:
        with Image.open(figures / name) as image:
            image.load()
    with Image.open(figures / "grids.png") as grids:
        # 3 seeds down, 2 arms across, one label band on top and one on the left; a column is as
        # wide as its grid or its label, whichever is wider
        font = studypage.ImageFont.load_default(studypage.FONT_SIZE)
        col = max(GRID_PX, int(font.getlength("course-baseline")) + studypage.GAP)
        assert col > GRID_PX
        assert grids.size == (studypage.LABEL_W + 2 * (col + studypage.GAP),
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
    assert missing(html) == ("This study folder (format 4) has no provenance (commit or code "
                             "hash, versions, command line, wall time) and no generator weights "
                             "(&lt;archive&gt;.generator-&lt;arm&gt;.pt beside its archive), "
                             "so no samples.")
    assert 'id="samples"' not in html and 'id="provenance"' not in html
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


def missing(html: str) -> str:
    """The one line on what the study folder lacks; "" when there is none."""
    lines = re.findall(r'<p class="missing">(.*?)</p>', html, re.S)
    assert len(lines) <= 1 and "\n" not in "".join(lines)
    return lines[0] if lines else ""


def test_the_returned_generators_samples_are_shown(built):
    root, html, figures = built
    samples = section(html, "samples")
    assert "<h3>course-fused</h3>" in samples and "<h3>extra</h3>" not in samples
    assert samples.count('src="data:image/png;base64,') == 1
    assert samples.count('src="data:image/gif;base64,') == 1
    swd = BASELINE_SWD[1] - 12.0 + JITTER[1]
    assert f"course-fused: fused-1, eval SWD {swd:.1f}, the lowest of its 3 seeds" in samples
    assert "Not shown, as they belong to another study: generator-extra.pt (run &#x27;fused-0&#x27;)" \
        in samples
    with Image.open(figures / "samples_course-fused.png") as grid:
        assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 64 images of 64 px, 2 px apart
    # provenance is there and the fused generator came back: the baseline's weights are missing,
    # but one is enough for the section, and the line names only what is wholly absent
    assert missing(html) == ""


def test_provenance_is_shown_whole(built):
    prov = section(built[1], "provenance")
    assert f"no git checkout: content hash {'c0de' * 3}" in prov and "c0de" * 16 in prov
    assert "no git checkout of this project at /tmp/x" in prov
    assert "Python 3.11.7, torch 2.11.0+cu130, CUDA 13.0, cuDNN 91300" in prov
    assert "cuda: NVIDIA H200" in prov and "python -m benchmarks.gpu_study --data z.zip" in prov
    assert "2026-12-04T17:31:00+00:00" in prov and "438.3 s" in prov
    assert "fused-2: trained by another version of the code" in prov


def test_an_old_format_study_builds_and_says_what_it_lacks_in_one_line(tmp_path):
    root = make_study(tmp_path / "study", extras=False)
    info = json.loads((root / "study.json").read_text())
    (root / "study.json").write_text(json.dumps({**info, "format": 1}))
    html = studypage.build_page(root, tmp_path / "p.html").read_text()
    line = missing(html)
    assert line.startswith("This study folder (format 1) has no provenance")
    # its runs name only their variant: each is its variant's course arm
    assert {r.meta["arm"] for r in load_study(root)[1]} == {"course-baseline", "course-fused"}
    assert "and no generator weights" in line
    assert verdict(html) and 'id="compare"' in html


def test_a_study_of_an_unknown_format_is_refused(tmp_path):
    root = make_study(tmp_path / "study", extras=False)
    info = json.loads((root / "study.json").read_text())
    (root / "study.json").write_text(json.dumps({**info, "format": 5}))
    with pytest.raises(UserError, match=r"study format 5, expected one of 1, 2, 3, 4"):
        studypage.build_page(root, tmp_path / "p.html")


def test_three_arms_and_an_ablation_each_against_each_earlier_one(tmp_path):
    """Arms as the study records them since format 3, beside format 2's variant-only runs."""
    root = make_study(tmp_path / "study", extras=False)
    rng = np.random.default_rng(1)
    for arm, shift, seeds in (("modern", -25.0, (0, 1, 2)), ("ablate-ema", -5.0, (0, 1))):
        for seed in seeds:
            add_run(root, f"{arm}-{seed}", kind="study", variant="baseline", seed=seed,
                    swd=BASELINE_SWD[seed] + shift + JITTER[seed], grad=2.0, rng=rng, arm=arm)
    html = studypage.build_page(root, tmp_path / "p.html").read_text(encoding="utf-8")
    compare = section(html, "compare")
    pairs = re.findall(r"<h3>(.*?) vs (.*?)</h3>", compare)
    order = ["course-baseline", "course-fused", "modern", "ablate-ema (ablation)"]
    assert pairs == [(b, a) for j, b in enumerate(order) for a in order[:j]]
    lines = re.findall(r'<p class="verdict"><strong>(.*?)</strong> (.*?)</p>', html, re.S)
    assert [head for head, _ in lines] == [f"{b} vs {a}:" for b, a in pairs]
    words = dict(lines)
    assert words["modern vs course-baseline:"].startswith(
        "modern is better than course-baseline at 95% with 3 seeds per arm")
    assert words["modern vs course-fused:"].startswith("modern is better than course-fused")
    assert "with 3 and 2 seeds per arm" in words["ablate-ema (ablation) vs course-baseline:"]
    budget = section(html, "budget")
    assert "<td>ablate-ema (ablation)</td>" in budget and "<td>modern</td>" in budget


def test_each_run_has_its_loss_whichever_format_recorded_it(tmp_path):
    """Format 4 records train.loss; before, runs recorded G's form as g_loss, and an arm's
    relativistic loss only in its overrides."""
    root = make_study(tmp_path / "study", extras=False)
    add_run(root, "modern-0", kind="study", variant="baseline", seed=0, swd=30.0, grad=2.0,
            rng=np.random.default_rng(2), arm="modern")
    format3 = {"kind": "study", "arm": "ablate-ralsgan", "variant": "baseline", "seed": 0,
               "overrides": arms.get("ablate-ralsgan").overrides, "g_loss": "non_saturating"}
    write_json(root / "runs" / "ralsgan-0" / "run.json", format3)
    loss = {r.name: r.meta["loss"] for r in load_study(root)[1]}
    assert loss == {**{f"{v}-{s}": "non_saturating" for v in ("baseline", "fused") for s in range(3)},
                    "modern-0": "ralsgan", "ralsgan-0": "ralsgan"}
