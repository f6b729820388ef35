"""FID and KID of uint8 image batches: torchmetrics on torch-fidelity's Inception-v3 features.

Weights only ever come from a local file; without one the metrics are skipped, never downloaded.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from catgan.errors import UserError
from catgan.metrics.swd import check_image_batch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
KID_SUBSETS = 100  # torch-fidelity's default


class _Passthrough(nn.Module):
    """Feeds precomputed features to torchmetrics, so Inception runs once for both FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def resolve_weights(weights: str) -> tuple[Path | None, str]:
    """The local weights file for ``weights`` ("": torch hub's cache, where torch-fidelity's own
    download puts it), or None and the reason."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    path = Path(weights).expanduser() if weights else hub
    if path.is_file():
        return path, ""
    where = f"Inception weights file {path} was not found" if weights else (
        f"no Inception weights given and none in the torch hub cache ({path})")
    return None, f"{where}; download {WEIGHTS_URL} and pass its path as the weights setting"


def load_inception(weights: str) -> tuple[nn.Module | None, str]:
    """torch-fidelity's Inception-v3 (2048 pool features) from local weights, or None and the reason."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None, "torch-fidelity is not installed; pip install torch-fidelity==0.4.0"
    path, reason = resolve_weights(weights)
    if path is None:
        return None, reason
    from torchmetrics.image.fid import NoTrainInceptionV3  # torchmetrics takes seconds to import

    try:
        # torch-fidelity unpickles the file with weights_only=False, which runs any code in it:
        # a file holding more than tensors is refused here first.
        torch.load(path, map_location="cpu", weights_only=True)
        # antialias=False resizes like TF1 / torch-fidelity, so numbers match published FIDs.
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                   feature_extractor_weights_path=str(path), antialias=False)
    except Exception as err:  # a truncated or foreign file fails in pickle, zip or state-dict loading
        # State-dict errors list every key over many lines; the warning must stay one short line.
        detail = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
        return None, (f"Inception weights file {path} could not be loaded ({detail}); "
                      f"download {WEIGHTS_URL} again")
    return model, ""


def _features(extractor: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    with torch.no_grad():
        chunks = [extractor(images[i:i + batch_size].to(device)).cpu()
                  for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).reshape(len(images), -1).double()


def fid_kid(real_features: Tensor, fake_features: Tensor, *, kid_subset_size: int,
            seed: int) -> dict[str, float]:
    """FID and KID (mean, std over KID_SUBSETS subsets) between two N x D feature sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # torchmetrics takes seconds to import
    from torchmetrics.image.kid import KernelInceptionDistance

    passthrough = _Passthrough(real_features.shape[1])
    fid = FrechetInceptionDistance(feature=passthrough)
    fid.update(real_features, real=True)
    fid.update(fake_features, real=False)
    subset = min(kid_subset_size, len(real_features), len(fake_features))
    with warnings.catch_warnings():
        # Its memory warning is about feature buffers we already hold; it would only add noise.
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=passthrough, subsets=KID_SUBSETS, subset_size=subset)
    kid.update(real_features, real=True)
    kid.update(fake_features, real=False)
    # KID draws its subsets from the global RNG; seed a private copy so results repeat.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def inception_metrics(real: Tensor, fake: Tensor, *, weights: str, batch_size: int = 100,
                      kid_subset_size: int = 1000, feature_extractor: nn.Module | None = None,
                      seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """``{"status": "ok", "fid", "kid_mean", "kid_std"}`` between uint8 N x 3 x H x W batches, or
    ``{"status": "skipped", "reason"}`` (logged once) with no local Inception weights.
    ``feature_extractor`` (uint8 batch -> N x D features) replaces Inception."""
    check_image_batch(real, "real images", min_count=2)
    check_image_batch(fake, "fake images", min_count=2)
    if batch_size < 1:
        raise UserError(f"inception metrics: batch_size must be a positive integer, got {batch_size}")
    if kid_subset_size < 2:
        raise UserError(f"inception metrics: kid_subset_size must be at least 2, got {kid_subset_size}")
    if feature_extractor is None:
        feature_extractor, reason = load_inception(weights)
        if feature_extractor is None:
            log.warning("FID/KID skipped: %s", reason)
            return {"status": "skipped", "reason": reason}
    device = torch.device(device)
    extractor = feature_extractor.to(device).eval()
    real_features = _features(extractor, real, batch_size, device)
    fake_features = _features(extractor, fake, batch_size, device)
    scores = fid_kid(real_features, fake_features, kid_subset_size=kid_subset_size, seed=seed)
    return {"status": "ok", **scores}
