"""The self-contained HTML report in catgan.report.runpage."""
from __future__ import annotations

import base64
import re
from html import escape
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from catgan.config import flatten
from catgan.errors import UserError
from catgan.images import grid_image, save_png
from catgan.model.nets import baseline, layer_table
from catgan.report.plots import write_video
from catgan.report.runpage import IMAGE_KEYS, build_report, format_value

TITLE = "baseline <seed 0> & 3 epochs"
METRICS = {
    "eval.json": {"fid": 87.123456, "kid": {"mean": 0.045678, "std": 0.0000123}, "count": 12345},
    "train.json": {"epoch": 3, "loss_d": 0.5},
}


class Sources(HTMLParser):
    """Every src / href attribute value and the text of <style> blocks."""

    def __init__(self):
        super().__init__()
        self.attrs: dict[str, list[tuple[str, str]]] = {}
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.attrs.setdefault(tag, []).extend((k, v or "") for k, v in attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def tables():
    generator, discriminator = baseline(16)
    return {"Generator": layer_table(generator, (16, 1, 1)),
            "Discriminator": layer_table(discriminator, (3, 64, 64))}


@pytest.fixture
def inputs(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = {}
    for key in IMAGE_KEYS:
        name = "epoch_003.png" if key == "final" else f"{key}.png"
        images[key] = tmp_path / name
        save_png(grid_image(torch.randint(0, 256, (4, 3, 8, 8), generator=gen, dtype=torch.uint8),
                            nrow=2), images[key])
    frames = [images["epoch0"], images["final"]]
    write_video(frames, tmp_path / "progress.mp4", fps=2)
    return images, tmp_path / "progress.mp4"


def make(tmp_path, inputs, tables, **overrides):
    images, video = inputs
    kwargs = dict(title=TITLE, images=images, video=video, layer_tables=tables, metrics=METRICS)
    kwargs.update(overrides)
    build_report(tmp_path / "report.html", **kwargs)
    return (tmp_path / "report.html").read_text(encoding="utf-8")


def test_report_fetches_nothing_from_the_network(tmp_path, inputs, tables):
    page = make(tmp_path, inputs, tables)
    parser = Sources()
    parser.feed(page)
    links = [v for attrs in parser.attrs.values() for k, v in attrs if k in ("src", "href")]
    assert links, "no src/href found: the parser saw nothing"
    assert all(v.startswith(("data:", "#")) for v in links), links
    css_urls = re.findall(r"url\(([^)]*)\)", "".join(parser.styles))
    assert not any(re.match(r"""\s*['"]?\s*(https?:)?//""", u) for u in css_urls)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "script" not in parser.attrs and "link" not in parser.attrs


def test_report_embeds_every_image_and_the_video(tmp_path, inputs, tables):
    images, video = inputs
    page = make(tmp_path, inputs, tables)
    parser = Sources()
    parser.feed(page)
    srcs = [v for k, v in parser.attrs["img"] if k == "src"]
    assert len(srcs) == len(IMAGE_KEYS)
    embedded = {base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in srcs}
    assert embedded == {path.read_bytes() for path in images.values()}
    video_attrs = dict(parser.attrs["video"])
    assert {"controls", "loop", "autoplay", "muted"} <= set(video_attrs)
    assert base64.b64decode(video_attrs["src"].removeprefix("data:video/mp4;base64,")) \
        == video.read_bytes()


def test_report_sections_are_in_order_and_grids_side_by_side(tmp_path, inputs, tables):
    page = make(tmp_path, inputs, tables)
    ids = re.findall(r'<section id="([a-z]+)"', page)
    assert ids == ["dataset", "networks", "curves", "samples", "video", "metrics"]
    samples = page[page.index('id="samples"'):page.index('id="video"')]
    assert samples.count("<img") == 2
    assert "Before training (epoch 0)" in samples and "After epoch 3" in samples
    assert 'class="sheet"' in samples


def test_report_holds_layer_tables_with_totals(tmp_path, inputs, tables):
    page = make(tmp_path, inputs, tables)
    for name, rows in tables.items():
        assert f"<h3>{name}</h3>" in page
        for row in rows:
            assert escape(row["layer"]) in page
        total = sum(row["params"] for row in rows)
        assert f'<td colspan="2">Total</td><td class="num">{total:,}</td>' in page
    first = tables["Generator"][0]
    assert f'<td class="num">{" × ".join(map(str, first["output_shape"]))}</td>' in page


def test_report_holds_metrics_and_escapes_text(tmp_path, inputs, tables):
    page = make(tmp_path, inputs, tables)
    for key, shown in [("fid", "87.1235"), ("kid.mean", "0.0457"), ("kid.std", "1.230e-05"),
                       ("count", "12,345"), ("epoch", "3"), ("loss_d", "0.5000")]:
        cell = rf"<code>{re.escape(key)}</code></td><td[^>]*>{re.escape(shown)}</td>"
        assert re.search(cell, page), key
    assert escape(TITLE) in page
    assert "<seed 0>" not in page


def test_report_skips_what_is_not_given(tmp_path, inputs, tables):
    images, _ = inputs
    page = make(tmp_path, inputs, {}, images={"losses": images["losses"]}, video=None, metrics={})
    assert re.findall(r'<section id="([a-z]+)"', page) == ["curves"]
    assert page.count("<img") == 1 and "<video" not in page


def test_report_errors_name_the_bad_input_and_leave_the_old_page(tmp_path, inputs, tables):
    images, video = inputs
    old = make(tmp_path, inputs, tables)
    with pytest.raises(UserError, match="gone.png: not found"):
        make(tmp_path, inputs, tables, images={**images, "dataset": tmp_path / "gone.png"})
    bmp = tmp_path / "dataset.bmp"
    Image.new("RGB", (4, 4)).save(bmp)
    with pytest.raises(UserError, match="dataset.bmp: cannot embed a .bmp file"):
        make(tmp_path, inputs, tables, images={**images, "dataset": bmp})
    with pytest.raises(ValueError, match="unknown report image key"):
        make(tmp_path, inputs, tables, images={**images, "extra": video})
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == old
    assert not list(tmp_path.glob(".report.html*")), "temp file left behind"


def test_flatten_and_format_value():
    assert flatten({"a": {"b": 1, "c": [2.0, 3]}, "e": "x"}) == {"a.b": 1, "a.c": [2.0, 3], "e": "x"}
    assert [format_value(v) for v in (1234567, 0.0, 12345.678, 3.14159, 0.00012345, True, "n/a",
                                      float("nan"))] == [
        "1,234,567", "0.0", "12,345.7", "3.1416", "1.234e-04", "True", "n/a", "nan"]
