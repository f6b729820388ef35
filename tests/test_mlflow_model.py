"""The generator as an MLflow model: logged by the train stage, loaded, registered, sampled."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catgan.cli import main
from catgan.config import parse_params
from catgan.generate.imagemodel import LatentsToImages, latents, signature
from catgan.tracking.client import EXPERIMENT_TAGS, MlflowTracker
from catgan.tracking.runmeta import run_tags
from catgan.training.loop import train
from catgan.training.outputs import write_train_outputs
from conftest import TINY, merge
from stages.train import log_dataset, log_generator

# Three trainings and two torch.export runs: 15 to 25 s on 2 busy cores, too long for the quick loop.
pytestmark = pytest.mark.slow

SWD = "eval.swd.swd_avg"
RUNS = (("fused", 0, 31.0), ("fused", 1, 29.5), ("baseline", 0, 40.0))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three tiny runs as the train stage logs them, with made-up SWDs, and each one's models/."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "catgan", root / "artifacts")
    rng = np.random.default_rng(0)
    images = np.ascontiguousarray(
        rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8).repeat(8, 2).repeat(8, 3))
    runs = {}
    for variant, seed, swd in RUNS:
        params = parse_params(merge(TINY, {"model": {"variant": variant}, "train": {
            "seed": seed, "epochs": 1}, "tracking": {"enabled": True}}))
        ck = root / f"{variant}{seed}"
        tracker.tags = run_tags(params, "d" * 64)  # as the train stage names its run
        result = train(params, images, "d" * 64, ck, tracker)
        write_train_outputs(result, ck / "grids", models=ck / "models", metrics=ck / "m",
                            samples=ck / "s", variant=variant, latent_dim=128, seed=seed)
        log_dataset(params, tracker, "d" * 64)
        if variant == "fused":  # the baseline run stands for one trained before models were logged
            log_generator(params, result, tracker)
        tracker.log_metrics({SWD: swd}, step=1)
        tracker.finish()
        runs[variant, seed] = (result.run_id, ck / "models")
    return uri, tracker, runs


def pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("sample_*.png"))])


def sample(tmp_path: Path, uri: str, source: str, name: str, n: int = 4) -> np.ndarray:
    assert main(["sample", source, "-n", str(n), "--seed", "5", "--out", str(tmp_path / name),
                 "--tracking-uri", uri]) == 0
    return pngs(tmp_path / name)


def test_logged_model_loads_has_its_signature_and_is_a_pyfunc(store, tmp_path, monkeypatch):
    import mlflow.pyfunc
    import mlflow.pytorch
    from mlflow.models import Model

    uri, tracker, runs = store
    run_id, models = runs["fused", 1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model_uri = f"runs:/{run_id}/generator"
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "dl")))
    info = Model.load(local)
    assert (local / "data" / "model.pt2").is_file()  # torch.export: no pickled code
    sig = info.signature.to_dict()
    assert json.loads(sig["inputs"]) == [{"type": "tensor", "tensor-spec": {
        "dtype": "float32", "shape": [-1, 128]}}]
    assert json.loads(sig["outputs"]) == [{"type": "tensor", "tensor-spec": {
        "dtype": "uint8", "shape": [-1, 3, 64, 64]}}]
    example = np.asarray(json.loads((local / "input_example.json").read_text()), dtype=np.float32)
    np.testing.assert_array_equal(example, latents(2, 128, 0).numpy())

    z = latents(4, 128, 5)
    # dst_path: left to itself, each loader downloads into a temp folder it never removes.
    for dst in ("torch", "pyfunc"):
        (tmp_path / dst).mkdir()
    as_torch = mlflow.pytorch.load_model(model_uri, dst_path=str(tmp_path / "torch"))(z)
    as_pyfunc = mlflow.pyfunc.load_model(model_uri, dst_path=str(tmp_path / "pyfunc")).predict(z.numpy())
    assert as_torch.dtype == torch.uint8 and as_pyfunc.dtype == np.uint8
    np.testing.assert_array_equal(as_torch.numpy(), as_pyfunc)
    # The exported model computes what catgan sample computes from the models/ folder.
    from_folder = sample(tmp_path, uri, str(models), "folder")
    from_run = sample(tmp_path, uri, run_id, "run")
    np.testing.assert_array_equal(from_folder, as_pyfunc.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(from_run, from_folder)


# Loads a logged model with catgan unimportable: what it computes must come from the model alone.
_LOAD_WITHOUT_CATGAN = """
import sys, importlib.abc
class NoCatgan(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "catgan" or name.startswith("catgan."):
            raise ImportError(f"{name} must not be needed to load the model")
sys.meta_path.insert(0, NoCatgan())
import mlflow.pytorch, numpy, torch
z = torch.from_numpy(numpy.load(sys.argv[2]))
numpy.save(sys.argv[3], mlflow.pytorch.load_model(sys.argv[1])(z).numpy())
"""


def test_a_logged_model_loads_whatever_the_package_layout(store, tmp_path):
    """A model logged before catgan's modules moved still loads after: the torch.export archive
    holds the graph and the weights and names no Python class, so loading it imports nothing of
    catgan (a pickled model would need the class at the module path it was saved from)."""
    import mlflow.artifacts

    uri, tracker, runs = store
    run_id, models = runs["fused", 1]
    local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/generator", dst_path=str(tmp_path / "m"),
                                                tracking_uri=uri)
    z = latents(3, 128, 5)  # what sample() draws: --seed 5
    np.save(tmp_path / "z.npy", z.numpy())
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_CATGAN, local, str(tmp_path / "z.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from_folder = sample(tmp_path, uri, str(models), "folder", n=3)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy").transpose(0, 2, 3, 1), from_folder)


def test_run_names_its_dataset_and_the_experiment_opens_on_runs(store):
    uri, tracker, runs = store
    run = tracker.client.get_run(runs["fused", 0][0])
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "synthetic: catgan.data.synthetic"
    assert inp.dataset.digest == "d" * 36  # MLflow's column holds 36 characters of the hash
    assert json.loads(inp.dataset.source)["path"] == "data/prepared/images.npy"
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "training")]
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert {k: exp.tags[k] for k in EXPERIMENT_TAGS} == EXPERIMENT_TAGS


def test_register_points_best_at_the_lowest_swd_and_sampling_it_works(store, tmp_path, capsys):
    uri, tracker, runs = store
    argv = ["compare", "--from", "mlflow", "--tracking-uri", uri, "--experiment", "catgan",
            "--out", str(tmp_path / "cmp"), "--register"]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "@best" in line]
    assert len(lines) == 1  # the baseline's run has no model to register
    assert lines[0].startswith(f"catgan-fused@best = version 1: run fused-seed1 "
                               f"({runs['fused', 1][0]}), lowest {SWD} 29.5 of 2 finished fused")
    assert lines[0].endswith("next best fused-seed0 at 31")
    assert main(argv) == 0  # again: the same versions, no new ones
    assert "catgan-fused@best = version 1:" in capsys.readouterr().out
    client = tracker.client
    assert len(client.search_model_versions("name = 'catgan-fused'")) == 1
    assert client.get_model_version_by_alias("catgan-fused", "best").run_id == runs["fused", 1][0]
    np.testing.assert_array_equal(sample(tmp_path, uri, "models:/catgan-fused@best", "best"),
                                  sample(tmp_path, uri, runs["fused", 1][0], "run"))


def one_line_error(capsys, uri: str, source: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", source, "--tracking-uri", uri, "--out", "unused"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_runs_models_and_pickled_models_are_one_line_errors(store, tmp_path, capsys):
    import mlflow.pytorch

    uri, tracker, runs = store
    assert "has no run 0123456789abcdef0123456789abcdef" in one_line_error(
        capsys, uri, "0123456789abcdef0123456789abcdef")
    assert "no registered model models:/catgan-wide@best" in one_line_error(
        capsys, uri, "models:/catgan-wide@best")
    assert "expected models:/<name>@<alias>" in one_line_error(capsys, uri, "models:/a/b/c")
    bare = runs["baseline", 0][0]
    assert "holds no 'generator' model" in one_line_error(capsys, uri, bare)
    # A pickle-format model: MLflow would run its code on load, so it must be refused unloaded.
    pickled = tmp_path / "pickled"
    generator = LatentsToImages(torch.nn.Sequential(torch.nn.Flatten()))
    generator.payload = Payload(tmp_path / "payload-ran")
    mlflow.pytorch.save_model(generator, pickled, serialization_format="pickle",
                              signature=signature(128), pip_requirements=[])
    tracker.client.log_artifacts(bare, str(pickled), "generator")
    capsys.readouterr()  # MLflow's own warning on saving a pickle
    assert "without running pickled code" in one_line_error(capsys, uri, bare)
    assert not (tmp_path / "payload-ran").exists()


class Payload:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)
