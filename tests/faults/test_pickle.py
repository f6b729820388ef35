"""Model files that carry code: every loader must refuse them before the code runs.

The payload's __reduce__ asks the unpickler to create a marker folder; the first test shows that
a plain torch.load does run it, so the others would notice a loader that does too.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from catgan.errors import UserError
from catgan.training import checkpoint


class Payload:
    """Unpickling this calls os.makedirs(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def evil_state_dict(path: Path, marker: Path) -> Path:
    """A torch.save zip that looks like a state dict, with the payload as one of its values."""
    torch.save({"weight": torch.zeros(2), "bias": Payload(marker)}, path)
    return path


def test_plain_torch_load_runs_the_payload(tmp_path):
    marker = tmp_path / "ran"
    torch.load(evil_state_dict(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.is_dir()


def test_checkpoint_load_refuses_pickled_code(tmp_path, caplog):
    marker = tmp_path / "ran"
    sealed = tmp_path / "sealed" / "last.pt"  # a valid checksum: only weights_only stops it
    checkpoint.save(sealed, {"epoch": 3, "generator": Payload(marker)})
    raw, legacy = tmp_path / "raw" / "last.pt", tmp_path / "legacy" / "last.pt"
    for path in (raw, legacy):
        path.parent.mkdir()
    evil_state_dict(raw, marker)  # no checksum
    legacy.write_bytes(pickle.dumps({"epoch": 3, "generator": Payload(marker)}))  # not even a zip
    with caplog.at_level(logging.WARNING, logger="catgan.training.checkpoint"):
        for path in (sealed, raw, legacy):
            assert checkpoint.load(path) is None, path
            assert str(path) in caplog.text
    assert not marker.exists()


def test_trained_weights_with_code_are_a_user_error(tmp_path):
    """models/generator.pt as evaluate and plot load it."""
    from catgan.model.nets import build
    from catgan.training.outputs import load_state_dict

    marker = tmp_path / "ran"
    path = evil_state_dict(tmp_path / "generator.pt", marker)
    generator, _ = build("baseline", 16, "default")
    with pytest.raises(UserError, match="generator.pt"):
        load_state_dict(generator, path)
    assert not marker.exists()


def test_inception_weights_with_code_are_refused(tmp_path):
    """eval.inception_weights is a path from params.yaml; torch-fidelity unpickles it fully."""
    from catgan.metrics.inception import load_inception

    marker = tmp_path / "ran"
    path = evil_state_dict(tmp_path / "inception.pth", marker)
    model, reason = load_inception(str(path))
    assert model is None and str(path) in reason
    assert not marker.exists()
