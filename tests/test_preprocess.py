"""preprocess: skip reasons, dedup, colour modes, torchvision-exact resizing and clean failures."""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image

from catgan.data.preprocess import load_images, preprocess
from catgan.errors import UserError
from imagefactory import (MESSY_DUPLICATES, MESSY_FOUND, MESSY_SKIPPED, MESSY_USED, noise,
                          png_bytes, write_messy_tree)

SIZE = 16


def run(raw, out, **overrides):
    kwargs = dict(image_size=SIZE, min_size=16, dedup=True, max_bad_fraction=0.5, workers=1)
    return preprocess(raw, out, **{**kwargs, **overrides})


def reference(img: Image.Image, size: int) -> np.ndarray:
    """What torchvision's Resize + CenterCrop make of a PIL image, as uint8 CHW."""
    out = T.CenterCrop(size)(T.Resize(size)(img))
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def test_messy_tree_manifest_and_array(tmp_path):
    raw = write_messy_tree(tmp_path / "raw")
    manifests = [run(raw, tmp_path / f"out{w}", workers=w) for w in (1, 2)]
    manifest = manifests[0]
    assert manifest["skipped"] == MESSY_SKIPPED
    assert manifest["duplicates_removed"] == MESSY_DUPLICATES
    assert manifest["files_found"] == MESSY_FOUND and manifest["files_used"] == MESSY_USED
    assert manifest["ignored"] == ["readme.txt"]
    assert manifest["shape"] == [MESSY_USED, 3, SIZE, SIZE]
    assert json.loads((tmp_path / "out1" / "manifest.json").read_text()) == manifest
    images = load_images(tmp_path / "out1" / "images.npy")
    assert images.shape == (MESSY_USED, 3, SIZE, SIZE) and images.dtype == np.uint8
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    assert digest == manifest["content_hash"]
    # Kept rows follow sorted path order: album.jpg/inside.png comes first.
    assert np.array_equal(images[0], reference(Image.open(raw / "album.jpg" / "inside.png"), SIZE))
    # Same bytes whatever the worker count, and nothing but the outputs left behind.
    assert manifests[1] == manifest
    assert sorted(os.listdir(tmp_path / "out2")) == ["images.npy", "manifest.json"]
    assert sorted(os.listdir(tmp_path)) == ["out1", "out2", "raw"]


def test_dedup_off_keeps_duplicates(tmp_path):
    raw = write_messy_tree(tmp_path / "raw")
    manifest = run(raw, tmp_path / "out", dedup=False)
    assert manifest["duplicates_removed"] == {}
    assert manifest["files_used"] == MESSY_USED + len(MESSY_DUPLICATES)


def test_matches_torchvision_resize_and_center_crop(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # Odd leftovers (66x64 -> 33, 64x70 -> 35) check crop rounding; 20x45 is an upscale.
    sizes = [(97, 61), (61, 97), (64, 66), (70, 64), (130, 33), (20, 45), (32, 32), (200, 150)]
    for i, (w, h) in enumerate(sizes):
        noise(w, h, seed=i).save(raw / f"img{i}.png")
    manifest = preprocess(raw, tmp_path / "out", image_size=32, min_size=8, dedup=False,
                          max_bad_fraction=0.0, workers=2)
    images = load_images(tmp_path / "out" / "images.npy")
    assert manifest["files_used"] == len(sizes)
    for i in range(len(sizes)):
        expected = reference(Image.open(raw / f"img{i}.png").convert("RGB"), 32)
        assert np.array_equal(images[i], expected), sizes[i]


def test_exif_orientation_applied(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    img = noise(40, 24, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the image rotated 90 degrees clockwise
    img.save(raw / "turned.png", exif=exif.tobytes())
    run(raw, tmp_path / "out", min_size=8, dedup=False)
    upright = img.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(load_images(tmp_path / "out" / "images.npy")[0], reference(upright, SIZE))


def test_colour_modes_to_rgb(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.new("L", (20, 20), 100).save(raw / "gray.png")
    Image.new("LA", (20, 20), (50, 0)).save(raw / "gray_clear.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 255)).save(raw / "rgba_opaque.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(raw / "rgba_clear.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(raw / "cmyk.tif")
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10])
    palette.save(raw / "palette.png")
    palette.save(raw / "palette_clear.gif", transparency=1)
    for name, value in (("i16_low.png", 1000), ("i16_mid.png", 0x8080), ("i16_top.png", 65535)):
        Image.fromarray(np.full((20, 20), value, dtype=np.uint16)).save(raw / name)
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(raw / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    expected = {
        "animated.gif": (255, 0, 0),  # first frame
        "cmyk.tif": (255, 0, 255),
        "gray.png": (100, 100, 100),
        "gray_clear.png": (255, 255, 255),  # transparent over white
        "i16_low.png": (4, 4, 4),  # 1000 / 257 rounds to 4; clipping would give 255
        "i16_mid.png": (128, 128, 128),
        "i16_top.png": (255, 255, 255),
        "palette.png": (200, 10, 10),
        "palette_clear.gif": (255, 255, 255),
        "rgba_clear.png": (255, 255, 255),
        "rgba_opaque.png": (10, 20, 30),
    }
    manifest = preprocess(raw, tmp_path / "out", image_size=SIZE, min_size=8, dedup=False,
                          max_bad_fraction=0.0, workers=1)
    images = load_images(tmp_path / "out" / "images.npy")
    assert manifest["files_used"] == len(expected)
    for row, (name, colour) in zip(images, sorted(expected.items())):
        assert (row == np.array(colour, dtype=np.uint8)[:, None, None]).all(), name


def test_decompression_bomb_is_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # workers=1 decodes in this process
    raw = tmp_path / "raw"
    raw.mkdir()
    noise(20, 20, 0).save(raw / "fine.png")
    noise(40, 40, 1).save(raw / "warns.png")  # 1,600 pixels: Pillow warns
    noise(50, 50, 2).save(raw / "raises.png")  # 2,500 pixels, over twice the limit: Pillow raises
    manifest = run(raw, tmp_path / "out", min_size=8, max_bad_fraction=1.0)
    assert manifest["skipped"] == {"too_large": ["raises.png", "warns.png"]}
    assert manifest["files_used"] == 1


def test_odd_names_links_and_loops(tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    picture = png_bytes(noise(20, 20, 0))
    with open(os.path.join(os.fsencode(raw), b"caf\xe9.png"), "wb") as fh:  # not valid UTF-8
        fh.write(picture)
    (raw / "zz.png").write_bytes(picture)
    # Sorting is by bytes: U+E000 (ee 80 80) comes before the lone byte f0, though not as a str.
    other = png_bytes(noise(20, 20, 1))
    (raw / "\ue000.png").write_bytes(other)
    with open(os.path.join(os.fsencode(raw), b"\xf0.png"), "wb") as fh:
        fh.write(other)
    os.symlink("..", raw / "sub" / "up")  # a folder loop
    os.symlink("b.jpg", raw / "a.jpg")  # a file link loop
    os.symlink("a.jpg", raw / "b.jpg")
    os.symlink(raw / "zz.png", raw / "sub" / "link.png")  # a good link is followed
    manifest = run(raw, tmp_path / "out", min_size=8, max_bad_fraction=0.5)
    assert manifest["skipped"] == {"unreadable": ["a.jpg", "b.jpg"]}
    assert manifest["duplicates_removed"] == {
        "sub/link.png": "caf\\xe9.png", "zz.png": "caf\\xe9.png", "\\xf0.png": "\ue000.png"}
    assert manifest["files_found"] == 7 and manifest["files_used"] == 2
    json.loads((tmp_path / "out" / "manifest.json").read_bytes().decode("utf-8"))


def test_too_many_bad_files_leaves_no_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    noise(20, 20, 0).save(raw / "good.png")
    (raw / "bad1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (raw / "bad2.png").write_text("text")
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        run(raw, out, min_size=8, max_bad_fraction=0.5)
    message = str(err.value)
    assert "2 of 3" in message and "data.max_bad_fraction" in message
    assert "not_an_image" in message and "bad1.jpg" in message and "bad2.png" in message
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["raw"]
    assert run(raw, out, min_size=8, max_bad_fraction=0.7)["files_used"] == 1


# case -> the error after "<raw folder>: ", as a regular expression
NOTHING_USABLE = {
    "missing": r"raw image folder not found; run the fetch stage first",
    "empty": r"the raw image folder is empty; check data\.source and data\.path, then run the "
             r"fetch stage again",
    "no_images": r"no image files \(\.bmp, .*\) found among its 1 entries \(e\.g\. notes\.txt\)",
    "all_bad": r"none of the 1 image files is usable \(empty: 1\)",
}


@pytest.mark.parametrize("case", sorted(NOTHING_USABLE))
def test_nothing_usable_says_which_of_four_faults_it_is(tmp_path, case):
    raw = tmp_path / "raw"
    if case != "missing":
        raw.mkdir()
    if case == "no_images":
        (raw / "notes.txt").write_text("hello")
    if case == "all_bad":
        (raw / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match=f"^{re.escape(str(raw))}: {NOTHING_USABLE[case]}"):
        run(raw, tmp_path / "out", max_bad_fraction=1.0)
    assert not (tmp_path / "out").exists()


def test_load_images_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match=r"missing\.npy.*not found"):
        load_images(tmp_path / "missing.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    bad = {"text.npy": None,
           "floats.npy": np.zeros((2, 3, 8, 8), np.float32),
           "hwc.npy": np.zeros((2, 8, 8, 3), np.uint8),
           "objects.npy": np.array([{"a": 1}], dtype=object)}
    for name, array in bad.items():
        if array is not None:
            np.save(tmp_path / name, array, allow_pickle=True)
        with pytest.raises(UserError, match=name.replace(".", r"\.")):
            load_images(tmp_path / name)
    np.save(tmp_path / "good.npy", np.zeros((2, 3, 8, 8), np.uint8))
    assert load_images(tmp_path / "good.npy").shape == (2, 3, 8, 8)
