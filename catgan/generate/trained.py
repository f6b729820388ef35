"""A trained generator, from wherever it was kept: a models/ folder, a DVC experiment, an MLflow run
or a registered model. Every one becomes the same LatentsToImages-like callable.

Nothing that holds pickled code is run: model files are read with ``weights_only=True``, and
MLflow models are torch.export archives that MLflow checks for pickles before loading.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from catgan.config import VARIANTS
from catgan.errors import UserError

RUN_ID = re.compile(r"[0-9a-f]{32}")
MODEL_PATH = "generator"  # the artifact path of the MLflow model in each run


@dataclass
class Trained:
    """``images(z)``: N x latent_dim float32 latents to N x 3 x 64 x 64 uint8 images;
    ``training_data()``: the prepared images it was trained on and where they are, when the
    source knows them (a DVC experiment does)."""

    images: Callable[[torch.Tensor], torch.Tensor]
    variant: str
    latent_dim: int
    where: str
    training_data: Callable[[], tuple[np.ndarray, str]] | None = None


def open_trained(source: str, repo: Path, tracking_uri: Callable[[], str]) -> Trained:
    """``source``: ``models:/name@alias`` or ``models:/name/version``, an MLflow run id (or
    ``runs:/<id>``), a folder holding generator.pt and run.json, a generator file of the GPU study
    (``.pt``), or a DVC experiment's name."""
    if source.startswith("models:/"):
        return from_registry(source, tracking_uri())
    if source.startswith("runs:/") or RUN_ID.fullmatch(source):
        return from_run(source.removeprefix("runs:/").split("/", 1)[0], tracking_uri())
    folder = Path(source) if Path(source).is_absolute() else repo / source
    if folder.is_dir():
        return from_folder(folder)
    if folder.suffix == ".pt" and folder.is_file():
        return from_weights_file(folder)
    return from_experiment(repo, source)


# ------------------------------------------------------------------------- models/ and DVC

def from_folder(folder: Path) -> Trained:
    try:
        run = json.loads((folder / "run.json").read_text())
        weights = (folder / "generator.pt").read_bytes()
    except FileNotFoundError as err:
        raise UserError(f"{err.filename}: not found; train first (dvc repro train) or name "
                        "another source") from None
    params = folder.parent / "params.yaml"
    return from_files(weights, run, str(folder), params.read_text() if params.is_file() else None)


def from_experiment(repo: Path, name: str) -> Trained:
    """The experiment's models/ as DVC cached them, read without checking anything out."""
    rev = experiment_rev(repo, name)
    where = f"DVC experiment {name} ({rev[:7]})"
    fix = "was it run on this machine?"
    run = json.loads(_read_cached(repo, rev, "models/run.json", where, fix))
    weights = _read_cached(repo, rev, "models/generator.pt", where, fix, mode="rb")
    trained = from_files(weights, run, where, _read_cached(repo, rev, "params.yaml", where, fix))

    def training_data() -> tuple[np.ndarray, str]:
        raw = _read_cached(repo, rev, PREPARED, where, "pass --data", mode="rb")
        return np.load(io.BytesIO(raw), allow_pickle=False), f"{where}'s {PREPARED}"

    trained.training_data = training_data
    return trained


PREPARED = "data/prepared/images.npy"


def _read_cached(repo: Path, rev: str, path: str, where: str, fix: str, mode: str = "r"):
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(repo), rev=rev, mode=mode)
    except Exception as err:  # DVC's errors have no common base: a missing cache, a bad lock file
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
        raise UserError(f"{where}: cannot read its {path} from the DVC cache ({reason}); "
                        f"{fix}") from None


def experiment_rev(repo: Path, name: str) -> str:
    """The commit of experiment ``name``, from DVC's refs (refs/exps/<baseline>/<name>); one made
    from HEAD wins over another of the same name."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"],
                         cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise UserError(f"{repo}: not a git repository, so {name!r} is neither a folder nor a DVC "
                        "experiment; pass --repo or a models/ folder")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    found = []
    for line in out.stdout.splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")  # refs, exps, baseline[:2], baseline[2:], name
        if len(parts) == 5 and parts[4] == name:
            found.append((parts[2] + parts[3] == head, sha))
    if not found:
        raise UserError(f"{name!r} is not a folder of {repo} nor a DVC experiment there; train "
                        "first (dvc repro), or name a DVC experiment (dvc exp list --all-commits), "
                        "an MLflow run id or models:/<name>@<alias>")
    found.sort(reverse=True)
    if len(found) > 1 and not found[0][0]:
        raise UserError(f"{len(found)} DVC experiments are named {name!r}, none made from HEAD; "
                        "check out the commit it was made from")
    return found[0][1]


def from_files(weights: bytes, run: dict, where: str, params_yaml: str | None) -> Trained:
    """``params_yaml``: the params.yaml beside the models, whose model.latent_dim stands in for
    run.json's in models trained before run.json recorded it."""
    variant, latent_dim = run.get("variant"), run.get("latent_dim")
    if latent_dim is None and params_yaml is not None:
        import yaml

        from catgan.config import parse_params

        latent_dim = parse_params(yaml.safe_load(params_yaml)).model.latent_dim
    fix = "re-run the train stage"
    _check_kind(variant, latent_dim, where, "run.json", fix)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{where}: generator.pt holds pickled objects, not only weights; refusing "
                        "to load it. Re-run the train stage") from None
    except (RuntimeError, EOFError) as err:
        raise UserError(f"{where}: generator.pt is not a PyTorch weights file "
                        f"({str(err).splitlines()[0]}); re-run the train stage") from None
    return _fitted(variant, latent_dim, state, where, "generator.pt", "run.json", fix)


def from_weights_file(path: Path) -> Trained:
    """A generator file of the GPU study (catgan/generate/weightsfile.py): fp16 weights, read as float32."""
    from catgan.generate import weightsfile

    info, state = weightsfile.read(path)
    variant, latent_dim = info.get("variant"), info.get("latent_dim")
    fix = "pass a generator file the GPU study wrote"
    _check_kind(variant, latent_dim, str(path), "its header", fix)
    trained = _fitted(variant, latent_dim, state, str(path), "its state_dict", "its header", fix)
    if info.get("run"):
        trained.where = f"{path} ({info['run']})"
    return trained


def _check_kind(variant, latent_dim, where: str, said_by: str, fix: str) -> None:
    if variant not in VARIANTS or not isinstance(latent_dim, int):
        raise UserError(f"{where}: {said_by} names variant {variant!r} and latent_dim "
                        f"{latent_dim!r}, not a known variant and size; {fix}")


def _fitted(variant: str, latent_dim: int, state: dict, where: str, weights: str, said_by: str,
            fix: str) -> Trained:
    from catgan.generate.imagemodel import from_state_dict

    try:
        model = from_state_dict(variant, latent_dim, state)
    except (RuntimeError, KeyError, AttributeError) as err:
        raise UserError(f"{where}: {weights} does not fit a {variant} generator with latent size "
                        f"{latent_dim}, as {said_by} says ({str(err).splitlines()[0]}); "
                        f"{fix}") from None
    return Trained(_no_grad(model), variant, latent_dim, where)


def _no_grad(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def images(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(z)

    return images


# ---------------------------------------------------------------------------------- MLflow

def from_run(run_id: str, uri: str) -> Trained:
    from catgan.tracking.store import open_client, redact

    client = open_client(uri, must_exist=True, fix="pass --tracking-uri")
    try:
        run = client.get_run(run_id)
    except Exception:  # MlflowException for an unknown id, whatever the store
        raise UserError(f"MLflow store {redact(uri)} has no run {run_id}; `make ui` lists the runs, or "
                        "pass --tracking-uri") from None
    return _load_logged(client, run, f"MLflow run {run_id}", uri)


def from_registry(uri_text: str, uri: str) -> Trained:
    from catgan.tracking.store import open_client, redact

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri_text)
    if not match:
        raise UserError(f"{uri_text}: expected models:/<name>@<alias> or models:/<name>/<version>, "
                        "e.g. models:/catgan-fused@best")
    name, alias, number = match.groups()
    client = open_client(uri, must_exist=True, fix="pass --tracking-uri")
    try:
        version = (client.get_model_version_by_alias(name, alias) if alias
                   else client.get_model_version(name, number))
    except Exception:
        raise UserError(f"MLflow store {redact(uri)} has no registered model {uri_text}; `catgan compare "
                        "--register` registers each variant's best run") from None
    run = client.get_run(version.run_id)
    return _load_logged(client, run, f"{uri_text} (version {version.version}, run "
                                     f"{version.run_id})", uri)


def has_model(client, run_id: str) -> bool:
    return any(f.path.endswith("/MLmodel") for f in client.list_artifacts(run_id, MODEL_PATH))


# No download progress bar (noise around our one line), and no pickled model loaded: MLflow loads
# them by default, and then checks pt2 archives for pickles only when told to.
_MLFLOW_SETTINGS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


def _load_logged(client, run, where: str, uri: str) -> Trained:
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from catgan.tracking.store import redact

    variant = run.data.params.get("model.variant")
    latent_dim = run.data.params.get("model.latent_dim")
    if not has_model(client, run.info.run_id):
        raise UserError(f"{where} in {redact(uri)} holds no '{MODEL_PATH}' model (trained before models "
                        "were logged, or not finished); sample its DVC experiment or models/ "
                        "folder instead")
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, _MLFLOW_SETTINGS):
        local = client.download_artifacts(run.info.run_id, MODEL_PATH, tmp)
        signature = Model.load(local).signature
        size = signature.inputs.inputs[0].shape[-1] if signature and signature.inputs else None
        if variant not in VARIANTS or str(size) != latent_dim:
            raise UserError(f"{where}: its model takes latents of size {size}, but the run's "
                            f"params say model.variant {variant!r}, model.latent_dim {latent_dim}; "
                            "is it a catgan generator run?")
        try:
            model = mlflow.pytorch.load_model(local)
        except MlflowException as err:
            raise UserError(f"{where}: its '{MODEL_PATH}' model cannot be loaded without running "
                            f"pickled code, so it is not loaded ({str(err).splitlines()[0]})") from None
    return Trained(_no_grad(model), variant, size, where)
