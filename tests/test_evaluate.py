"""The evaluate stage's library part: numbers only, seeded, fair real-vs-real floor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from catgan.config import flat_numbers
from catgan.metrics.evaluate import evaluate, mean_score, real_sets
from catgan.model.nets import build
from catgan.training.loop import train


@pytest.fixture
def trained(tiny_params, tiny_images, tmp_path):
    params = tiny_params(train={"epochs": 1}, eval={"num_samples": 6, "batch_size": 4})
    return params, train(params, tiny_images, "d", tmp_path)


def test_metrics_are_nested_numbers_and_repeat_exactly(trained, tiny_images, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    params, result = trained
    first, notes = evaluate(params, result.generator, result.discriminator, tiny_images,
                            torch.device("cpu"))
    again, _ = evaluate(params, result.generator, result.discriminator, tiny_images,
                        torch.device("cpu"))
    assert first == again
    flat = flat_numbers(first)
    assert all(isinstance(v, float) and np.isfinite(v) for v in flat.values())
    assert {"swd.swd_avg", "swd_real_floor.swd_avg", "scores.real", "scores.fake",
            "diversity.diversity_ratio", "inception.computed"} <= flat.keys()
    assert first["num_samples"] == 6
    assert first["inception"] == {"computed": 0} and notes["fid"].startswith("skipped")


def test_real_sets_are_disjoint_seeded_and_capped_by_the_data(tiny_images):
    a, b = real_sets(tiny_images, 100, seed=3)
    assert len(a) == len(b) == len(tiny_images) // 2
    rows = {bytes(x.numpy()) for x in a} | {bytes(x.numpy()) for x in b}
    assert len(rows) == len(tiny_images)
    a2, _ = real_sets(tiny_images, 100, seed=3)
    assert torch.equal(a, a2)


@pytest.mark.parametrize("d_norm", ["batchnorm", "spectral"])
def test_mean_score_leaves_the_discriminator_untouched(tiny_images, d_norm):
    torch.manual_seed(0)
    _, D = build("baseline", 8, "default", d_norm)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    score = mean_score(D, torch.from_numpy(tiny_images), batch_size=5, device=torch.device("cpu"))
    assert 0 < score < 1
    assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())
