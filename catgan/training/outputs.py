"""The train stage's declared outputs: model files, metrics, per-epoch curves and sample grids."""
from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from catgan.errors import UserError
from catgan.fileio import atomic_dir, write_bytes, write_json, write_text

if TYPE_CHECKING:
    import torch

# metrics/steps.csv: what each training step records; history.csv: their epoch means, then the
# quality check of catgan/training/monitor.py (blank in epochs it skips).
COLUMNS = ("loss_d", "loss_g", "real_score", "fake_score", "g_grad_norm", "augment_p")
QUALITY = ("swd_avg", "swd_64", "swd_32", "swd_16", "fixed_real_score", "fixed_fake_score",
           "diversity_ratio")
HISTORY_COLUMNS = ("epoch", *COLUMNS, *QUALITY)
# Their MLflow keys: the UI groups charts by the part before "/", prefixed groups first, so the
# training curves come before evaluate's single-point eval.* values.
EPOCH_KEY, STEP_KEY = "epoch/", "step/"


@dataclass
class TrainResult:
    """What training hands the stages: the networks and what was recorded on the way."""

    generator: torch.nn.Module  # with train.ema, the average: what grids, checks and stages use
    discriminator: torch.nn.Module
    history: list[dict] = field(default_factory=list)  # per epoch: step means, then quality
    steps: list[dict] = field(default_factory=list)  # one row every train.log_every steps
    run_id: str | None = None
    resumed_from: int = 0


def save_state_dict(module: torch.nn.Module, path: Path) -> None:
    # Serialised in memory first: torch.save onto a full disk fails with an unreadable message,
    # while write_bytes names the path and says the disk is full.
    import torch  # here: catgan compare reads the column names without paying torch's import

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    write_bytes(path, buf.getvalue())


def load_state_dict(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the train stage first (dvc repro train)") from None
    except pickle.UnpicklingError:  # objects or code beyond tensors: never run them
        raise UserError(f"{path}: holds pickled objects, not only weights; refusing to load it. "
                        "Re-run the train stage (dvc repro train)") from None
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{path}: does not fit model.* in params.yaml ({str(err).splitlines()[0]}); "
                        "re-run the train stage (dvc repro train)") from None
    return module


def write_csv(rows: list[dict], path: Path, columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})  # None (not measured) -> empty cell
    write_text(path, buf.getvalue())


def read_json(path: Path, stage: str) -> dict:
    """A JSON file that ``stage`` writes, or one clear error saying how to make it again."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the {stage} stage first (dvc repro {stage})") from None
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err}); run the {stage} stage again "
                        f"(dvc repro -f {stage})") from None


def read_run(models: Path) -> dict:
    """``models/run.json``: the MLflow run id, variant, latent size, seed and epochs of the models."""
    return read_json(models / "run.json", "train")


def write_train_outputs(result: TrainResult, grid_dir: Path, *, models: Path, metrics: Path,
                        samples: Path, variant: str, latent_dim: int, seed: int) -> None:
    save_state_dict(result.generator, models / "generator.pt")
    save_state_dict(result.discriminator, models / "discriminator.pt")
    write_json(models / "run.json", {"mlflow_run_id": result.run_id, "variant": variant,
                                     "latent_dim": latent_dim, "seed": seed,
                                     "epochs": len(result.history)})
    final = result.history[-1]
    write_json(metrics / "train.json", {k: final[k] for k in ("epoch", *COLUMNS)})
    write_csv(result.history, metrics / "history.csv", HISTORY_COLUMNS)
    write_csv(result.steps, metrics / "steps.csv", ("step", "epoch", *COLUMNS))
    with atomic_dir(samples) as tmp:
        for png in sorted(grid_dir.glob("epoch_*.png")):
            shutil.copy2(png, tmp / png.name)
