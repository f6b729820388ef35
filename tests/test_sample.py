"""catgan sample from a models/ folder: PNGs, grid, latent walk, nearest neighbours, errors."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catgan.cli import main
from catgan.config import parse_params
from catgan.generate.imagemodel import latents
from catgan.generate.sample import nearest, slerp
from catgan.images import to_uint8
from catgan.model.nets import sample as g_sample
from catgan.training.loop import train
from catgan.training.outputs import write_train_outputs
from conftest import TINY, merge


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A models/ folder from two tiny epochs, and the generator that training returned."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8).repeat(8, 2).repeat(8, 3)
    root = tmp_path_factory.mktemp("trained")
    result = train(parse_params(merge(TINY, {})), np.ascontiguousarray(images), "d", root / "ck")
    write_train_outputs(result, root / "ck" / "grids", models=root / "models",
                        metrics=root / "metrics", samples=root / "samples", variant="fused",
                        latent_dim=128, seed=0)
    return root / "models", result.generator


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def run(*argv: str) -> None:
    assert main(["sample", *map(str, argv)]) == 0


def test_pngs_are_the_generator_with_batch_statistics_and_the_same_per_seed(trained, tmp_path):
    models, G = trained
    run(models, "-n", 5, "--seed", 3, "--out", tmp_path / "a")
    run(models, "-n", 5, "--seed", 3, "--out", tmp_path / "b")
    run(models, "-n", 5, "--seed", 4, "--out", tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"sample_{i:03d}.png" for i in range(5)]
    # Training ran G in channels_last, whose kernels round differently: compare in the default
    # layout, as the weights load.
    G = copy.deepcopy(G).to(memory_format=torch.contiguous_format)
    expected = to_uint8(g_sample(G, latents(5, 128, 3).view(5, 128, 1, 1)))
    for i, name in enumerate(names):
        a = pixels(tmp_path / "a" / name)
        assert a.shape == (64, 64, 3)
        np.testing.assert_array_equal(a, expected[i].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(a, pixels(tmp_path / "b" / name))
        assert not np.array_equal(a, pixels(tmp_path / "c" / name))


def test_grid_walk_and_nearest_sheet(trained, tmp_path, capsys):
    models, _ = trained
    n, steps = 3, 4
    drawn = torch.from_numpy(np.stack([pixels(p) for p in sorted(
        _draw(models, n, tmp_path / "png").iterdir())])).permute(0, 3, 1, 2)
    # Training data holding two of the samples themselves: those must be found, at distance 0.
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.integers(0, 256, (40, 3, 64, 64), dtype=np.uint8),
                           drawn[[2, 0]].numpy()])
    np.save(tmp_path / "images.npy", data)
    run(models, "-n", n, "--grid", "--interpolate", steps, "--nearest", "--data",
        tmp_path / "images.npy", "--out", tmp_path / "out")
    out = capsys.readouterr().out
    assert "batch statistics over 3 image(s)" in out and "RMS pixel distance min 0.0" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "grid.png", "interpolation.gif", "nearest.png"]
    assert pixels(tmp_path / "out" / "grid.png").shape == (2 + 2 * 66, 2 + 2 * 66, 3)  # 2 x 2
    gif = Image.open(tmp_path / "out" / "interpolation.gif")
    assert gif.n_frames == steps and gif.size == (2 + n * 66, 66 + 2)
    sheet = pixels(tmp_path / "out" / "nearest.png")
    assert sheet.shape == (66 + 2, 2 + 2 * n * 66, 3)  # sample, nearest; sample, nearest; ...
    tile = lambda k: sheet[2:66, 2 + 66 * k:66 * (k + 1)]  # noqa: E731
    for i, j in ((0, 41), (2, 40)):
        np.testing.assert_array_equal(tile(2 * i), drawn[i].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(tile(2 * i + 1), data[j].transpose(1, 2, 0))


def _draw(models: Path, n: int, out: Path) -> Path:
    run(models, "-n", n, "--out", out)
    return out


def test_nearest_is_exact_pixel_l2():
    rng = np.random.default_rng(2)
    train_set = rng.integers(0, 256, (30, 3, 4, 4), dtype=np.uint8)
    samples = torch.from_numpy(rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8))
    index, rms = nearest(samples, train_set)
    brute = ((samples.numpy()[:, None].astype(np.int64) - train_set[None].astype(np.int64)) ** 2)
    brute = brute.reshape(5, 30, -1).sum(-1)
    np.testing.assert_array_equal(index, brute.argmin(1))
    np.testing.assert_allclose(rms, np.sqrt(brute.min(1) / 48))


def test_slerp_keeps_to_the_sphere_and_ends_at_the_endpoints():
    a, b = torch.eye(2, 8)[:1], torch.eye(2, 8)[1:]  # orthogonal unit vectors
    walk = slerp(a, b, torch.linspace(0, 1, 5))[0]
    assert torch.equal(walk[0], a[0]) and torch.allclose(walk[-1], b[0], atol=1e-7)
    assert torch.allclose(walk.norm(dim=1), torch.ones(5))  # a straight line would dip to 0.71
    assert torch.allclose(walk[2], (a[0] + b[0]) / 2 ** 0.5)
    same = slerp(a, a.clone(), torch.linspace(0, 1, 3))[0]  # parallel: no division by zero
    assert torch.allclose(same, a.expand(3, 8))


def one_line_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", *map(str, argv)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def copy_models(models: Path, dest: Path, **run_json) -> Path:
    dest.mkdir()
    (dest / "generator.pt").write_bytes((models / "generator.pt").read_bytes())
    (dest / "run.json").write_text(json.dumps({**json.loads((models / "run.json").read_text()),
                                               **run_json}))
    return dest


class Payload:
    def __reduce__(self):
        return os.makedirs, (str(Path.cwd() / "payload-ran"),)


def test_bad_models_are_one_line_errors(trained, tmp_path, capsys, monkeypatch):
    models, _ = trained
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, copy_models(models, tmp_path / "small", latent_dim=64))
    assert "does not fit a fused generator with latent size 64" in err
    err = one_line_error(capsys, copy_models(models, tmp_path / "base", variant="baseline"))
    assert "does not fit a baseline generator" in err
    err = one_line_error(capsys, copy_models(models, tmp_path / "odd", variant="wide"))
    assert "not a known variant" in err
    evil = copy_models(models, tmp_path / "evil")
    torch.save({"weight": torch.zeros(2), "bias": Payload()}, evil / "generator.pt")
    assert "holds pickled objects" in one_line_error(capsys, evil)
    assert not (tmp_path / "payload-ran").exists()
    (tmp_path / "empty").mkdir()
    assert "run.json: not found" in one_line_error(capsys, tmp_path / "empty")
    assert "not a git repository" in one_line_error(capsys, "no-such-exp", "--repo", tmp_path)
    assert "-n must be at least 1" in one_line_error(capsys, models, "-n", 0)
    assert not list(tmp_path.glob("sampled*"))


def test_help_says_it_samples_with_batch_statistics(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "normalises with the batch's statistics" in out and "same pixels" in out
    assert "models:/catgan-fused@best" in out


def test_models_from_before_run_json_held_the_latent_size_use_params_yaml(trained, tmp_path,
                                                                          capsys):
    models, _ = trained
    (tmp_path / "old").mkdir()
    old = copy_models(models, tmp_path / "old" / "models", latent_dim=None)
    assert "latent_dim None" in one_line_error(capsys, old)  # no params.yaml beside it
    (tmp_path / "old" / "params.yaml").write_text("model:\n  variant: fused\n  latent_dim: 64\n")
    assert "latent size 64" in one_line_error(capsys, old)
    (tmp_path / "old" / "params.yaml").write_text("model:\n  variant: fused\n")  # default: 128
    run(old, "-n", 2, "--out", tmp_path / "out")
    assert "fused, latent size 128" in capsys.readouterr().out
