"""Training checkpoints: everything needed to continue a run bit for bit, written atomically."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from catgan.fileio import atomic_path

log = logging.getLogger(__name__)


def rng_state(data_gen: torch.Generator) -> dict:
    """Every RNG a training run touches, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached), "kind": kind},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "data": data_gen.get_state(),
    }


def restore_rng_state(state: dict, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    data_gen.set_state(state["data"])


def save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None when there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file must never stop a fresh start
        log.warning("checkpoint %s is unreadable (%s): starting from scratch", path, err)
        return None
