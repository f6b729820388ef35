"""Diversity ratio: pairwise distances of generated images against real ones."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from catgan.errors import UserError
from catgan.metrics.diversity import collapse_warning, diversity_ratio


def varied_images(n: int, seed: int) -> torch.Tensor:
    """Random images whose brightness and contrast vary from one image to the next."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g) * 60
    contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=g) / 2
    texture = torch.rand(n, 3, 16, 16, generator=g) * contrast * 190
    return (base + texture).round().clamp(0, 255).to(torch.uint8)


def brute_force_mean_distance(images: torch.Tensor) -> float:
    flat = images.reshape(len(images), -1).numpy().astype(np.float64) / 255
    pairs = itertools.combinations(range(len(flat)), 2)
    return float(np.mean([np.linalg.norm(flat[i] - flat[j]) for i, j in pairs]))


def test_identical_fakes_have_ratio_zero_and_warn():
    real = varied_images(32, seed=1)
    fake = real[:1].repeat(32, 1, 1, 1)
    result = diversity_ratio(real, fake, seed=0)
    assert result["diversity_fake"] == 0.0
    assert result["diversity_ratio"] == 0.0
    assert result["diversity_real"] > 0.5
    assert "mode collapse" in collapse_warning(result["diversity_ratio"])


def test_another_draw_of_the_same_distribution_has_ratio_near_one_and_no_warning():
    result = diversity_ratio(varied_images(128, seed=1), varied_images(128, seed=2), seed=0)
    assert result["diversity_ratio"] == pytest.approx(1.0, abs=0.1)
    assert collapse_warning(result["diversity_ratio"]) is None


def test_small_sets_use_every_pair_exactly():
    real = varied_images(5, seed=3)
    fake = (real.float() / 2).round().to(torch.uint8)  # half the contrast: half the distances
    result = diversity_ratio(real, fake, seed=0)
    assert result["diversity_real"] == pytest.approx(brute_force_mean_distance(real), rel=1e-12)
    assert result["diversity_fake"] == pytest.approx(brute_force_mean_distance(fake), rel=1e-12)
    assert result["diversity_ratio"] == pytest.approx(0.5, abs=0.01)


def test_sampled_pairs_are_seeded():
    real, fake = varied_images(64, seed=1), varied_images(64, seed=2)
    first = diversity_ratio(real, fake, max_pairs=100, seed=5)
    assert diversity_ratio(real, fake, max_pairs=100, seed=5) == first
    assert diversity_ratio(real, fake, max_pairs=100, seed=6) != first


def test_collapse_warning_threshold():
    assert collapse_warning(0.49) is not None and "0.49" in collapse_warning(0.49)
    assert collapse_warning(0.5) is None
    assert collapse_warning(1.3) is None
    assert collapse_warning(0.7, threshold=0.8) is not None


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (torch.rand(4, 3, 8, 8), varied_images(4, 0), "uint8"),
        (varied_images(1, 0), varied_images(4, 0), "at least 2"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), varied_images(4, 0), "identical"),
    ],
)
def test_bad_input_is_a_clear_user_error(real, fake, message):
    with pytest.raises(UserError, match=message):
        diversity_ratio(real, fake, seed=0)
