"""FID / KID through torchmetrics against numpy references, and skipping without weights."""
from __future__ import annotations

import importlib
import json
import logging
import math
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catgan.errors import UserError
from catgan.metrics.inception import WEIGHTS_FILE, inception_metrics, load_inception, resolve_weights
from conftest import TINY, merge, missing, write_params

LOGGER = "catgan.metrics.inception"


class PooledProjection(nn.Module):
    """A tiny stand-in for Inception: 4x4 average-pooled pixels through a fixed random projection."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("weight", torch.randn(48, self.num_features, generator=g))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
        return pooled @ self.weight


def images(n: int, seed: int, low: int = 0, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 16, 16), dtype=torch.uint8, generator=g)


def features(x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return PooledProjection()(x).double().numpy()


def ref_fid(a: np.ndarray, b: np.ndarray) -> float:
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    try:
        from scipy.linalg import sqrtm
        cross = np.trace(sqrtm(cov_a @ cov_b).real)
    except ImportError:  # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric matrix
        vals, vecs = np.linalg.eigh(cov_a)
        root_a = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean_term + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def ref_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3."""
    m, d = a.shape
    k_aa, k_bb, k_ab = [(x @ y.T / d + 1) ** 3 for x, y in [(a, a), (b, b), (a, b)]]
    off_diag = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(off_diag - 2 * k_ab.mean())


def test_fid_matches_numpy_reference():
    real, fake = images(60, seed=1), images(50, seed=2, low=40, high=220)
    got = inception_metrics(real, fake, weights="", feature_extractor=PooledProjection(), batch_size=16)
    expected = ref_fid(features(real), features(fake))
    assert got["status"] == "ok"
    assert expected > 0.1
    assert got["fid"] == pytest.approx(expected, rel=1e-4)


def test_kid_matches_unbiased_mmd_when_subset_is_all_samples():
    real, fake = images(40, seed=3), images(40, seed=4, low=60, high=256)
    got = inception_metrics(real, fake, weights="", feature_extractor=PooledProjection(),
                            kid_subset_size=1000)
    expected = ref_kid(features(real), features(fake))
    assert expected > 1e-3
    assert got["kid_mean"] == pytest.approx(expected, rel=1e-6)
    # Every subset is the whole set, so all subsets agree.
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-9 * expected)


def test_kid_subsets_are_seeded_and_capped_at_the_smaller_set():
    real, fake = images(30, seed=5), images(24, seed=6, low=30)

    def run(seed: int = 0, size: int = 20) -> dict:
        return inception_metrics(real, fake, weights="", feature_extractor=PooledProjection(),
                                 kid_subset_size=size, seed=seed)

    first, other_seed = run(0), run(1)
    assert first == run(0)
    assert first["kid_std"] > 0  # 20 of 24/30 samples: subsets really differ
    assert other_seed["kid_mean"] != first["kid_mean"]
    assert other_seed["fid"] == first["fid"]
    # 1000 is more than either set holds: it runs as 24, the size of the smaller set.
    capped = run(size=1000)
    assert capped == run(size=24)
    assert capped["kid_mean"] != first["kid_mean"]


def test_missing_weights_file_is_skipped_with_one_warning(tmp_path, caplog):
    missing = tmp_path / "nope" / WEIGHTS_FILE
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = inception_metrics(images(4, 1), images(4, 2), weights=str(missing))
    assert result["status"] == "skipped"
    assert set(result) == {"status", "reason"}
    assert str(missing) in result["reason"] and "download" in result["reason"]
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert result["reason"] in records[0].getMessage()


def test_empty_weights_looks_in_torch_hub_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = inception_metrics(images(4, 1), images(4, 2), weights="")
    assert result["status"] == "skipped" and str(cached) in result["reason"]
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights("") == (cached, "")


def fidelity_inception():
    """torch-fidelity's Inception module: a pinned dependency, so missing it fails on CI."""
    try:
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    except ImportError:
        missing("torch-fidelity is not installed", "pip install torch-fidelity==0.4.0")


def test_unreadable_weights_file_is_skipped_not_a_crash(tmp_path, caplog):
    fidelity_inception()
    broken = tmp_path / WEIGHTS_FILE
    broken.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = inception_metrics(images(4, 1), images(4, 2), weights=str(broken))
    assert result["status"] == "skipped" and "could not be loaded" in result["reason"]
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1


def test_missing_torch_fidelity_is_skipped(monkeypatch, tmp_path):
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as if uninstalled
    result = inception_metrics(images(4, 1), images(4, 2), weights=str(weights))
    assert result["status"] == "skipped" and "torch-fidelity" in result["reason"]


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random He-initialised weights, saved as a weights file."""
    fidelity = fidelity_inception()
    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with pytest.MonkeyPatch.context() as patch:  # build the network without the real weights
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        model = fidelity.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pth"))
    g = torch.Generator().manual_seed(0)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        scale = (2 / conv.weight[0].numel()) ** 0.5
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    return folder / WEIGHTS_FILE, model


def test_inception_uses_local_weights_and_resizes_like_torch_fidelity(random_inception):
    path, reference = random_inception
    inception, reason = load_inception(str(path))
    assert reason == ""
    batch = images(1, seed=7)
    with torch.no_grad():
        got, expected = inception(batch), reference(batch)[0]
    # FID over 2048 features needs a 2048 x 2048 eigensolve (many seconds): compare the features.
    assert got.shape == (1, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # Inception-v3 at 299 x 299 and a 2048-feature FID, in two stage processes
def test_evaluate_stage_writes_fid_and_kid_from_a_local_weights_file(random_inception, tiny_data,
                                                                      tmp_path):
    from test_stages import run_stage

    path, _ = random_inception
    write_params(tmp_path, merge(TINY, {"train": {"epochs": 1},
                                        "eval": {"inception_weights": str(path)}}))
    shutil.copytree(tiny_data / "data", tmp_path / "data")
    run_stage(tmp_path, "train")
    evaluated = run_stage(tmp_path, "evaluate")
    assert "FID/KID skipped" not in evaluated.stderr, evaluated.stderr[-3000:]
    inception = json.loads((tmp_path / "metrics" / "eval.json").read_text())["inception"]
    assert sorted(inception) == ["computed", "fid", "kid_mean", "kid_std"]
    assert inception["computed"] == 1 and inception["fid"] > 0 and inception["kid_std"] >= 0
    assert all(math.isfinite(value) for value in inception.values()), inception


@pytest.mark.parametrize(
    ("real", "kwargs", "message"),
    [
        (torch.rand(4, 3, 16, 16), {}, "uint8"),
        (images(1, 0), {}, "at least 2"),
        (images(4, 0), {"kid_subset_size": 1}, "kid_subset_size"),
        (images(4, 0), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_is_a_clear_user_error(real, kwargs, message):
    with pytest.raises(UserError, match=message):
        inception_metrics(real, images(4, 1), weights="", feature_extractor=PooledProjection(), **kwargs)
