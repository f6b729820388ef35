"""Two training processes on the gloo backend (CPU): the torchrun path of the train stage."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from catgan.config import parse_params
from catgan.training import checkpoint
from catgan.training.distributed import Dist
from catgan.training.loop import train
from catgan.training.outputs import EPOCH_KEY
from conftest import ROOT, TINY, free_port, merge, write_params
from test_stages import stage_env


def _worker(rank: int, port: int, out: str, images: np.ndarray, overrides: dict) -> None:
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                  world_size=2)
    params = parse_params(merge(TINY, merge(
        {"train": {"nproc": 2, "epochs": 1, "steps_per_epoch": 1}}, overrides)))
    result = train(params, images, "test", Path(out) / "ckpt", dist=Dist(rank=rank, world=2,
                                                                          local_rank=rank,
                                                                          local_world=2))
    torch.save({"G": result.generator.state_dict(), "D": result.discriminator.state_dict(),
                "history": result.history}, Path(out) / f"rank{rank}.pt")
    torch_dist.destroy_process_group()


# The recipe: the average's BatchNorm statistics and spectral norm's vectors must agree too.
RECIPE = {"model": {"d_norm": "spectral"},
          "train": {"ema": 0.9, "augment": "color,translation,cutout", "loss": "ralsgan"}}


@pytest.mark.slow  # two processes: over 5 s, so out of the quick loop
@pytest.mark.parametrize("overrides", [{}, RECIPE], ids=["course", "recipe"])
def test_both_processes_hold_identical_weights_after_a_step(tmp_path, tiny_images, overrides):
    mp.spawn(_worker, args=(free_port(), str(tmp_path), tiny_images, overrides), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for net in ("G", "D"):
        for name, value in ranks[0][net].items():
            assert torch.equal(value, ranks[1][net][name]), f"{net}.{name} differs between ranks"
    assert ranks[0]["history"] == ranks[1]["history"]  # losses averaged over both shards
    # The weights cannot tell: on CPU each process's BatchNorm sees its own half batch, so they
    # differ from one process's even when both processes draw the same latents.
    noise = [state["data"] for state in checkpoint.load(tmp_path / "ckpt/last.pt")["rng"]]
    assert len(noise) == 2
    assert not torch.equal(*noise), "both processes drew their latents from one noise stream"


@pytest.fixture(scope="module")
def project(tiny_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("ddp")
    write_params(project, merge(TINY, {"train": {"nproc": 2}, "tracking": {"enabled": True}}))
    shutil.copytree(tiny_data / "data", project / "data")
    return project


def launch_command(nproc: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "catgan.training.launch", f"--nproc-per-node={nproc}", *options,
            str(ROOT / "stages/train.py")]


def launch(project: Path, nproc: int, scratch: Path | None = None) -> subprocess.CompletedProcess:
    """The launcher run to its end; ``scratch``: its temp folder (TMPDIR), made empty."""
    env = stage_env(project)
    if scratch is not None:
        scratch.mkdir()
        env["TMPDIR"] = str(scratch)
    return subprocess.run(launch_command(nproc), cwd=project, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.slow  # the whole stage under torchrun, two processes and a store: out of the quick loop
def test_torchrun_train_stage_writes_one_set_of_outputs_and_one_mlflow_run(project, tmp_path):
    proc = launch(project, 2, scratch=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list((tmp_path / "tmp").glob("torchelastic_*"))  # torch's log folder
    assert json.loads((project / "metrics/train.json").read_text())["epoch"] == 2
    assert len(list((project / "samples").iterdir())) == 3
    assert len(list((project / "checkpoints").iterdir())) == 1
    with sqlite3.connect(project / "mlflow.db") as db:
        runs = db.execute("select status from runs").fetchall()
        epochs = db.execute("select count(*) from metrics where key = ?",
                            (EPOCH_KEY + "loss_d",)).fetchone()[0]
        processes = db.execute("select value from tags where key = 'processes'").fetchall()
    assert runs == [("FINISHED",)]
    assert processes == [("2",)]
    assert epochs == 2


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_a_mistake_in_every_process_is_one_line_not_torchruns_traceback(project, tmp_path):
    write_params(tmp_path, merge(TINY, {"train": {"nproc": 2, "batch_size": 3}}))
    (tmp_path / "data").symlink_to(project / "data")
    proc = launch(tmp_path, 2, scratch=tmp_path / "tmp")
    assert proc.returncode == 2
    assert not list((tmp_path / "tmp").glob("torchelastic_*"))
    assert "Traceback" not in proc.stderr
    assert "train.batch_size = 3 must be a multiple of train.nproc = 2" in proc.stderr
    assert "failed in process" in proc.stderr.splitlines()[-1]


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_plain_python_with_nproc_2_says_how_to_launch(project, tmp_path):
    write_params(tmp_path, merge(TINY, {"train": {"nproc": 2}}))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=stage_env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: train.nproc = 2 but 1 process(es) started on this node; run `python -m catgan.training.launch "
        "--nproc-per-node=2 --module stages.train` (dvc repro does) or set train.nproc to match"]


def node_folder(folder: Path, data: Path, nproc: int, seed: int = 0) -> Path:
    """A tracking-free project of its own (as on another machine) that reads ``data``."""
    folder.mkdir()
    write_params(folder, merge(TINY, {"train": {"nproc": nproc, "seed": seed}}))
    (folder / "data").symlink_to(data)
    return folder


def run_two_nodes(node0: Path, node1: Path) -> list[tuple[int, str]]:
    """Node 0 told by options, node 1 by torchrun's PET_* variables (how `dvc repro` is told):
    static rendezvous at a free port of 127.0.0.1. Their exit codes and stderr."""
    port = free_port()
    procs = [subprocess.Popen(launch_command(1, "--nnodes=2", "--node-rank=0",
                                             "--master-addr=127.0.0.1", f"--master-port={port}"),
                              cwd=node0, env=stage_env(node0), stderr=subprocess.PIPE, text=True),
             subprocess.Popen(launch_command(1), cwd=node1, stderr=subprocess.PIPE, text=True,
                              env={**stage_env(node1), "PET_NNODES": "2", "PET_NODE_RANK": "1",
                                   "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)})]
    try:
        return [(proc.wait(timeout=300), proc.stderr.read()) for proc in procs]
    finally:
        for proc in procs:  # SIGTERM: torchrun's agent then stops the worker it started
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def two_nodes(project, tmp_path_factory):
    """One node of two processes, then two nodes of one process each, from the same data."""
    root = tmp_path_factory.mktemp("nodes")
    one = node_folder(root / "one", project / "data", 2)
    proc = launch(one, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = [node_folder(root / f"node{r}", project / "data", 1) for r in (0, 1)]
    for code, stderr in run_two_nodes(*nodes):
        assert code == 0, stderr[-3000:]
    return one, *nodes


@pytest.mark.slow  # two torchrun launchers rendezvousing: out of the quick loop
def test_two_nodes_of_one_process_train_the_weights_of_one_node_of_two(two_nodes):
    one, node0, node1 = two_nodes
    for name in ("generator.pt", "discriminator.pt"):
        single, multi = (torch.load(folder / "models" / name, weights_only=True)
                         for folder in (one, node0))
        assert single.keys() == multi.keys()
        for key, value in single.items():
            assert torch.equal(value, multi[key]), f"{name}: {key} differs"
    assert (one / "metrics/history.csv").read_bytes() == (node0 / "metrics/history.csv").read_bytes()
    assert sorted(p.name for p in node1.iterdir()) == ["data", "params.yaml"], \
        "a process other than rank 0 wrote outputs or a checkpoint"


@pytest.mark.slow  # two torchrun launchers rendezvousing: out of the quick loop
def test_nodes_that_do_not_share_the_checkpoint_fail_in_one_line_instead_of_hanging(two_nodes):
    _, node0, node1 = two_nodes  # node 0 holds the finished run's checkpoint, node 1 none
    for code, stderr in run_two_nodes(node0, node1):
        assert code == 2, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "checkpoints/ must be on a filesystem they all share" in stderr


@pytest.mark.slow  # two torchrun launchers rendezvousing: out of the quick loop
def test_nodes_given_different_params_fail_in_one_line(project, tmp_path):
    nodes = [node_folder(tmp_path / f"node{r}", project / "data", 1, seed=r) for r in (0, 1)]
    for code, stderr in run_two_nodes(*nodes):
        assert code == 2, stderr[-3000:]
        assert "the processes were given different params, data or training code" in stderr


@pytest.mark.parametrize("argv, message", [
    (["--standalone", "--nnodes=2"],
     "--standalone runs one node on its own, but --nnodes is given; drop one or the other"),
    (["--nnodes=2", "--node-rank=2"], "--node-rank=2 must be from 0 to 1 with --nnodes=2"),
    (["--nnodes=two"], "--nnodes=two: give a number of nodes, or MIN:MAX"),
], ids=["standalone-and-nnodes", "node-rank-too-high", "nnodes-not-a-number"])
def test_a_bad_launcher_option_is_one_line(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "catgan.training.launch", *argv, "train.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=stage_env(tmp_path))
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {message}")


def test_the_launcher_is_standalone_only_without_multi_node_options(monkeypatch):
    from catgan.training.launch import parse

    assert parse(["--nproc-per-node=2", "train.py"])[0].standalone
    assert not parse(["--nnodes=2", "--master-addr=10.0.0.1", "train.py"])[0].standalone
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "10.0.0.1:29400")
    monkeypatch.setenv("PET_RDZV_BACKEND", "c10d")
    assert not parse(["train.py"])[0].standalone
