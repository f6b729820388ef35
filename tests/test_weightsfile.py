"""A generator file of the GPU study (catgan/generate/weightsfile.py): fp16, small, and what catgan sample
draws from; anything else is refused in one line."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catgan.cli import main
from catgan.errors import UserError
from catgan.generate import weightsfile
from catgan.generate.imagemodel import from_state_dict, latents
from catgan.generate.trained import from_weights_file
from catgan.images import grid_image
from catgan.model.nets import build


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(7)
    generator, _ = build("fused", 128, "default")
    path = tmp_path_factory.mktemp("weights") / "study.generator-fused.pt"
    size = weightsfile.write(path, generator, {"variant": "fused", "latent_dim": 128,
                                               "run": "study-fused-seed1", "swd_avg": 29.9})
    assert size == path.stat().st_size
    return path, generator


def halved(generator: torch.nn.Module) -> dict:
    """The generator's weights as fp16 holds them, back in float32."""
    return {k: v.half().float() if v.is_floating_point() else v
            for k, v in generator.state_dict().items()}


def test_the_file_is_fp16_small_and_says_what_it_is(written):
    path, generator = written
    assert path.stat().st_size <= weightsfile.LIMIT
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["kind"] == weightsfile.KIND and raw["run"] == "study-fused-seed1"
    assert {v.dtype for v in raw["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    info, state = weightsfile.read(path)
    assert info == {"kind": weightsfile.KIND, "variant": "fused", "latent_dim": 128,
                    "run": "study-fused-seed1", "swd_avg": 29.9}
    expected = halved(generator)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_catgan_sample_draws_a_grid_a_walk_and_the_nearest_images_from_it(written, tmp_path):
    path, generator = written
    train = np.random.default_rng(0).integers(0, 256, (6, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "images.npy", train)
    out = tmp_path / "out"
    assert main(["sample", str(path), "-n", "4", "--seed", "3", "--grid", "--interpolate", "3",
                 "--nearest", "--data", str(tmp_path / "images.npy"), "--out", str(out)]) == 0
    with torch.no_grad():
        images = from_state_dict("fused", 128, halved(generator))(latents(4, 128, 3))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "grid.png")),
                                  np.asarray(grid_image(images, nrow=2)))
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.n_frames == 3
    with Image.open(out / "nearest.png") as sheet:
        assert sheet.size[1] > 64  # 4 samples and their 4 nearest: one row of 8


def test_the_header_names_the_run(written):
    assert from_weights_file(written[0]).where == f"{written[0]} (study-fused-seed1)"


class Opaque:
    """Not a tensor, number or string: torch.save pickles it."""


@pytest.mark.parametrize("payload, message", [
    (lambda g: g.state_dict(), "not a catgan generator, fp16 file"),
    (lambda g: {"kind": weightsfile.KIND, "variant": "fused", "latent_dim": 128,
                "state_dict": {"x": Opaque()}}, "holds pickled objects, not only weights"),
    (lambda g: {"kind": weightsfile.KIND, "variant": "wide", "latent_dim": 128,
                "state_dict": g.state_dict()}, "its header names variant 'wide'"),
    (lambda g: {"kind": weightsfile.KIND, "variant": "baseline", "latent_dim": 128,
                "state_dict": g.state_dict()}, "its state_dict does not fit a baseline generator"),
])
def test_other_files_are_refused_in_one_line(written, tmp_path, payload, message):
    buf = io.BytesIO()
    torch.save(payload(written[1]), buf)
    path = tmp_path / "other.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=message) as err:
        from_weights_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_file_is_refused(written, tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(written[0].read_bytes()[:4096])
    with pytest.raises(UserError, match=r"cut\.pt: not a PyTorch weights file"):
        from_weights_file(path)
