"""Tests for the procedural cat-face generator."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from catgan.data.synthetic import draw_cat, write_synthetic
from catgan.errors import UserError


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == "RGB"
        assert im.size == (64, 64)
        return _pixels(im)


def test_draw_cat_is_rgb_of_requested_size():
    for size in (32, 64):
        image = draw_cat(np.random.default_rng(3), size=size)
        assert image.mode == "RGB"
        assert image.size == (size, size)


def test_same_seed_gives_identical_pixels():
    a = _pixels(draw_cat(np.random.default_rng([7, 2])))
    b = _pixels(draw_cat(np.random.default_rng([7, 2])))
    assert np.array_equal(a, b)


def test_same_seed_writes_identical_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_synthetic(tmp_path / "a", count=3, seed=11)
    second = write_synthetic(tmp_path / "b", count=3, seed=11)
    for p, q in zip(first, second):
        assert np.array_equal(_read(p), _read(q))


def test_different_seeds_give_different_images(tmp_path):
    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    zero = write_synthetic(tmp_path / "s0", count=4, seed=0)
    one = write_synthetic(tmp_path / "s1", count=4, seed=1)
    for p, q in zip(zero, one):
        assert not np.array_equal(_read(p), _read(q))


def test_images_are_distinct_and_varied():
    images = np.stack([_pixels(draw_cat(np.random.default_rng([5, i]))) for i in range(64)])
    for i, j in itertools.combinations(range(len(images)), 2):
        assert not np.array_equal(images[i], images[j]), f"images {i} and {j} are identical"
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 10.0, "per-image mean colours barely vary"
    # The face centre is mostly fur, so its spread shows the fur colour varies, not only the backdrop.
    centres = images[:, 20:44, 20:44].reshape(len(images), -1, 3).mean(axis=1)
    assert centres.std(axis=0).min() > 30.0, "fur colours barely vary"
    # Each image holds a drawn face, not a flat fill.
    assert images.reshape(len(images), -1).astype(np.float64).std(axis=1).min() > 20.0


def test_write_synthetic_writes_readable_pngs(tmp_path):
    paths = write_synthetic(tmp_path, count=6, seed=3)
    assert [p.name for p in paths] == [f"cat_{i:05d}.png" for i in range(6)]
    assert sorted(tmp_path.iterdir()) == paths
    for path in paths:
        _read(path)


def test_image_does_not_depend_on_count(tmp_path):
    (tmp_path / "five").mkdir()
    (tmp_path / "ten").mkdir()
    five = write_synthetic(tmp_path / "five", count=5, seed=42)
    ten = write_synthetic(tmp_path / "ten", count=10, seed=42)
    for p, q in zip(five, ten[:5]):
        assert np.array_equal(_read(p), _read(q))
    assert np.array_equal(_read(ten[3]), _pixels(draw_cat(np.random.default_rng([42, 3]))))


def test_missing_output_folder_is_a_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="nope"):
        write_synthetic(missing, count=2, seed=0)
    assert not missing.exists()


@pytest.mark.parametrize("kwargs, key", [
    ({"count": 0, "seed": 0}, "count"),
    ({"count": 2.5, "seed": 0}, "count"),
    ({"count": 2, "seed": -1}, "seed"),
    ({"count": 2, "seed": 0, "size": 8}, "size"),
])
def test_bad_arguments_are_user_errors(tmp_path, kwargs, key):
    with pytest.raises(UserError, match=key):
        write_synthetic(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []
