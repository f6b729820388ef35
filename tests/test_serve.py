"""`mlflow models serve` serves the registered generator: its pixels are catgan sample's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from catgan.cli import main
from catgan.config import parse_params
from catgan.generate.imagemodel import latents
from catgan.study.compare.register import register_best
from catgan.tracking.client import MlflowTracker
from catgan.tracking.localserver import free_port
from catgan.training.loop import train
from catgan.training.outputs import write_train_outputs
from conftest import TINY, env, merge
from stages.train import log_generator
from test_sample import pixels
from test_ui import listening_addresses, server_processes

pytestmark = pytest.mark.slow

MLFLOW = Path(sys.executable).with_name("mlflow")
START_TIMEOUT = 180  # seconds: importing MLflow's server and torch on 2 busy cores


def test_served_model_draws_the_pixels_catgan_sample_draws(tiny_images, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "catgan", tmp_path / "artifacts")
    params = parse_params(merge(TINY, {"train": {"epochs": 1}, "tracking": {"enabled": True}}))
    result = train(params, tiny_images, "d", tmp_path / "ck", tracker)
    write_train_outputs(result, tmp_path / "ck" / "grids", models=tmp_path / "models",
                        metrics=tmp_path / "m", samples=tmp_path / "s", variant="fused",
                        latent_dim=128, seed=0)
    log_generator(params, result, tracker)
    tracker.log_metrics({"eval.swd.swd_avg": 30.0}, step=1)
    tracker.finish()
    register_best(uri, "catgan")
    n, seed = 3, 11
    assert main(["sample", str(tmp_path / "models"), "-n", str(n), "--seed", str(seed), "--out",
                 str(tmp_path / "sampled")]) == 0
    expected = np.stack([pixels(tmp_path / "sampled" / f"sample_{i:03d}.png") for i in range(n)])

    port = free_port()
    cmd = [str(MLFLOW), "models", "serve", "-m", "models:/catgan-fused@best", "--env-manager",
           "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with tempfile.TemporaryFile("a+b") as log:
        server = subprocess.Popen(cmd, env={**env(), "MLFLOW_TRACKING_URI": uri},
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, server, log)
            assert listening_addresses(port) == {"127.0.0.1"}
            body = json.dumps({"inputs": latents(n, 128, seed).tolist()}).encode()
            served = np.asarray(post(f"{url}/invocations", body)["predictions"])
        finally:
            stop(server)
    assert served.shape == (n, 3, 64, 64) and served.min() >= 0 and served.max() <= 255
    np.testing.assert_array_equal(served.astype(np.uint8).transpose(0, 2, 3, 1), expected)
    assert server_processes(port) == {}


def post(url: str, body: bytes) -> dict:
    # No proxy: one taken from the environment would not reach the loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with opener.open(request, timeout=60) as response:
        return json.loads(response.read())


def wait_until_healthy(url: str, server: subprocess.Popen, log) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n"
                        f"{log.read().decode(errors='replace')[-3000:]}")
        try:
            with opener.open(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    log.seek(0)
    pytest.fail(f"mlflow models serve did not answer in {START_TIMEOUT} s:\n"
                f"{log.read().decode(errors='replace')[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (start_new_session), SIGKILL it if it lingers."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
