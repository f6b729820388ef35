"""A real MLflow tracking server (PostgreSQL store) killed while the train stage logs to it: started
again, the run ends up complete with every value once; never back, the stage still writes its
outputs and names the incomplete run, and the re-send it names completes it."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from mlflowserver import (MARK, artifacts, assert_complete, files_holding_mark, kill_mlflow,
                          search_runs, secret_uri, team_server)
from stagerun import make_project, ok, prepared, run, run_side_by_side, start, wait_until

from catgan.training import checkpoint


from catgan.tracking import server
pytestmark = pytest.mark.slow

EPOCHS, STEPS_PER_EPOCH = 8, 2


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    with team_server() as (url, folder):
        yield url, folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return prepared(tmp_path_factory.mktemp("data"))


def epoch_of(project: Path) -> int:
    found = list(project.glob("checkpoints/*/last.pt"))
    return checkpoint.load(found[0])["epoch"] if found else -1


def train_project(dest: Path, data: Path, uri: str) -> Path:
    return make_project(dest, {"train": {"epochs": EPOCHS},
                               "tracking": {"enabled": True, "uri": uri}}, data=data)


def run_id_of(project: Path) -> str:
    return json.loads((project / "models" / "run.json").read_text())["mlflow_run_id"]


def test_two_train_stages_logging_at_the_same_time_both_land_whole(tmp_path, team, data):
    """The queue test overlaps whole pipelines, not their short train stages; this one overlaps those."""
    url, _ = team
    projects = [make_project(tmp_path / variant, {"model": {"variant": variant},
                                                  "train": {"epochs": EPOCHS},
                                                  "tracking": {"enabled": True, "uri": url}},
                             data=data) for variant in ("baseline", "fused")]
    for done in run_side_by_side([(project, "train") for project in projects]):
        ok(done)
    runs = {run["info"]["run_id"]: run["info"] for run in search_runs(url)}
    spans = [(runs[run_id_of(p)]["start_time"], runs[run_id_of(p)]["end_time"]) for p in projects]
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans  # at once
    for project in projects:
        assert_complete(url, run_id_of(project), EPOCHS, EPOCHS * STEPS_PER_EPOCH)


def test_a_server_killed_and_started_again_mid_run_ends_with_every_value_once(tmp_path, team, data):
    url, folder = team
    project = train_project(tmp_path / "project", data, url)
    log = project / "train.log"
    proc = start(project, "train", log)
    try:
        assert wait_until(lambda: epoch_of(project) >= 1, proc)
        # Paused while the server goes and comes back, so that the epochs between are known to
        # have run with it gone, whatever the machine's speed.
        proc.send_signal(signal.SIGSTOP)
        down_at = epoch_of(project)
        kill_mlflow(folder)
        proc.send_signal(signal.SIGCONT)
        assert wait_until(lambda: epoch_of(project) >= down_at + 2, proc)
        proc.send_signal(signal.SIGSTOP)
        assert epoch_of(project) < EPOCHS, "training ended before the server came back"
        server.start(folder, port=int(url.rsplit(":", 1)[1]), workers=2)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    text = log.read_text()
    lines = text.splitlines()
    assert len([line for line in lines if f"MLflow tracking store {url} failed in " in line]) == 1, text
    assert len([line for line in lines if "answers again: re-sent" in line]) == 1, text
    assert "incomplete" not in text and "Traceback" not in text
    run_id = run_id_of(project)
    assert_complete(url, run_id, EPOCHS, EPOCHS * STEPS_PER_EPOCH)
    assert {a["path"] for a in artifacts(url, run_id)} >= {"layers_generator.md",
                                                          "layers_discriminator.md"}


def test_a_server_that_never_comes_back_leaves_outputs_and_one_line_and_the_resend_completes_it(
        tmp_path, team, data):
    url, folder = team
    project = train_project(tmp_path / "project", data, "")
    log = project / "train.log"
    env = {"MLFLOW_TRACKING_URI": secret_uri(url)}
    proc = start(project, "train", log, env)
    try:
        assert wait_until(lambda: epoch_of(project) >= 1, proc)
        proc.send_signal(signal.SIGSTOP)
        kill_mlflow(folder)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    text = log.read_text()
    run_id = run_id_of(project)
    incomplete = [line for line in text.splitlines() if "is incomplete and left unfinished" in line]
    assert len(incomplete) == 1, text
    redacted = url.replace("http://", "http://c4tg4n-user:***@")
    assert incomplete[0].startswith(f"ERROR catgan.tracking.client: MLflow run {run_id} in {redacted} is ")
    assert "dvc repro --force --single-item train" in incomplete[0]
    assert "Traceback" not in text and MARK not in text
    assert checkpoint.load(next(project.glob("checkpoints/*/last.pt")))["epoch"] == EPOCHS
    assert len(list((project / "samples").glob("epoch_*.png"))) == EPOCHS + 1
    assert (project / "models" / "generator.pt").is_file()

    # The re-send the line names: the stage again, with the server back (dvc repro -f -s train runs
    # exactly this command).
    server.start(folder, port=int(url.rsplit(":", 1)[1]), workers=2)
    again = ok(run(project, "train", env))
    assert "resuming from" in again.stderr and MARK not in again.stderr + again.stdout
    assert_complete(url, run_id, EPOCHS, EPOCHS * STEPS_PER_EPOCH)
    assert [r["info"]["run_id"] for r in search_runs(url)].count(run_id) == 1
    assert files_holding_mark(project) == []
