"""catgan's gate in front of the team server (catgan.tracking.gate), tried as issue 33 tried it: a
real server with logins (SERVER_AUTH=1) on 127.0.0.1, two teammates made by `catgan server
add-user`, `owner` and `mate`; `owner` logs into the project's experiment `catgan` and into his
experiment `private`, which the admin denies `mate`. The path tricks that read a denied artifact,
changes to another's runs, writes outside the store and the routes catgan never uses are refused;
catgan's commands and the UI pages work through the gate; the server runs unprivileged; a dead
first process still leaves stop stopping it all; 8 clients logging through a kill -9 of the
server keep every value once."""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflowserver import group_members, kill_mlflow, mlflow_pid_of, raw, secret_uri, team_server
from test_ui import check_artifact_api, check_experiment_kind, check_pages, chromium, train_each_variant

from catgan.cli import main
from catgan.tracking import auth as serverauth
from catgan.tracking import client as trackclient
from catgan.tracking import routes, server
from catgan.tracking.auth import as_user
from catgan.tracking.localserver import check_port
from conftest import ROOT, params_of, smooth_images
from stages.train import log_generator

pytestmark = pytest.mark.slow

SECRET = "owner's secret"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
API = "/api/2.0/mlflow"


@dataclass
class Team:
    url: str
    folder: Path
    admin: tuple[str, str]
    owner: tuple[str, str]
    mate: tuple[str, str]
    shared: str  # experiment ids
    private: str
    runs: dict[str, str]  # experiment id -> owner's run in it


@pytest.fixture(scope="module")
def team():
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    with team_server(auth=True) as (url, folder):
        for name in ("owner", "mate"):
            assert main(["server", "add-user", name, "--dir", str(folder)]) == 0
        admin, owner, mate = (serverauth.read_credentials(serverauth.credentials_file(folder, name))
                              for name in ("admin", "owner", "mate"))
        client = MlflowClient(url)
        with as_user(*owner):
            shared = client.get_experiment_by_name("catgan").experiment_id  # add-user made it
            private = client.create_experiment("private")
            runs = {}
            for experiment in (shared, private):
                run_id = client.create_run(experiment, tags={"note": "owner's"}).info.run_id
                client.log_text(run_id, SECRET, "secret/private_secret.txt")
                client.log_metric(run_id, "loss", 1.0)
                runs[experiment] = run_id
        with as_user(*admin):
            AuthServiceClient(url).grant_user_permission("mate", "experiment", private, "DENY")
        yield Team(url, folder, admin, owner, mate, shared, private, runs)


def status_of(call) -> int:
    """The HTTP status with which the server refused ``call()`` (MLflow's client raises one kind
    of error for its REST calls, requests' another for artifacts); 200 if it did not."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as err:
        return err.get_http_status_code()
    except requests.HTTPError as err:
        return err.response.status_code
    return 200


def test_every_route_of_mlflow_is_served_kept_for_admins_or_refused_on_purpose(tmp_path):
    """MLflow's own route list (its FastAPI routes and Flask rules, logins included): a route an
    MLflow upgrade adds fails here until routes.POLICY decides it."""
    script = """
import json, os, sys, warnings
warnings.filterwarnings("ignore")
folder = sys.argv[1]
with open(f"{folder}/auth.ini", "w") as ini:
    ini.write(f"[mlflow]\\ndefault_permission = READ\\ndatabase_uri = sqlite:///{folder}/auth.db\\n"
              "admin_username = admin\\n")
os.environ.update(MLFLOW_AUTH_CONFIG_PATH=f"{folder}/auth.ini", _MLFLOW_SGI_NAME="uvicorn",
                  MLFLOW_AUTH_ADMIN_PASSWORD="an-admin-password-0123456789",
                  MLFLOW_FLASK_SERVER_SECRET_KEY="key")
from mlflow.server import app
from mlflow.server.auth import create_app
from catgan.tracking.routes import mlflow_routes
print(json.dumps(list(mlflow_routes(create_app(), app))))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [tuple(route) for route in json.loads(proc.stdout.splitlines()[-1])]
    assert routes.unplaced(found) == ([], [])
    policies = {route: routes.policy_of(*route) for route in found}
    assert policies["POST", "/ajax-api/3.0/mlflow/demo/generate"] == routes.REFUSED
    assert policies["GET", "/api/2.0/mlflow/users/list"] == routes.ADMIN
    assert policies["POST", "/api/2.0/mlflow/runs/log-batch"] == routes.SERVED


def test_path_tricks_to_a_denied_artifact_are_refused_and_normalised_paths_keep_their_answer(team):
    run = team.runs[team.private]
    secret = f"{team.private}/{run}/artifacts/secret/private_secret.txt"
    listing = f"{team.private}/{run}/artifacts/secret"
    tricks = [f"{ARTIFACTS}/./{secret}", f"/ajax-api/2.0/mlflow-artifacts/artifacts/./{secret}",
              f"{ARTIFACTS}/%2e/{secret}", f"{ARTIFACTS}/%2E%2F{secret}", f"{ARTIFACTS}/%252e/{secret}",
              f"{ARTIFACTS}//{secret}", f"{ARTIFACTS}/{team.shared}/../{secret}",
              f"{ARTIFACTS}/./{team.private}/models/m-0123456789abcdef/artifacts/MLmodel",
              f"{ARTIFACTS}?path=./{listing}", f"/ajax-api/2.0/mlflow-artifacts/artifacts?path=%2e/{listing}",
              f"{ARTIFACTS}?path=.", f"{ARTIFACTS}?path=", ARTIFACTS,
              f"/get-artifact?path=./secret/private_secret.txt&run_uuid={run}"]
    for path in tricks:
        status, body = raw(team.url, "GET", path, team.mate)
        assert status == 400 and SECRET.encode() not in body, (path, status, body)
        assert "private_secret" not in body.decode(), path
    assert raw(team.url, "GET", f"{ARTIFACTS}/{secret}", team.mate)[0] == 403
    assert raw(team.url, "GET", f"{ARTIFACTS}?path={listing}", team.mate)[0] == 403
    assert raw(team.url, "GET", f"{ARTIFACTS}/{secret}", team.owner) == (200, SECRET.encode())
    status, body = raw(team.url, "GET", f"{ARTIFACTS}?path={listing}", team.owner)
    assert status == 200 and [f["path"] for f in json.loads(body)["files"]] == ["private_secret.txt"]


def test_a_teammate_changes_only_their_own_runs_and_no_experiment_they_do_not_manage(team, tmp_path):
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(team.url)
    theirs = team.runs[team.shared]
    changes = {
        "overwrite an artifact": lambda run: client.log_text(run, "mate's", "secret/private_secret.txt"),
        "mark it FAILED": lambda run: client.set_terminated(run, "FAILED"),
        "rename it": lambda run: client.update_run(run, name="renamed-by-mate"),
        "log a metric": lambda run: client.log_metric(run, "loss", 9.0),
        "log a batch": lambda run: client.log_batch(run, metrics=[Metric("loss", 9.0, 0, 1)],
                                                    params=[Param("p", "1")], tags=[RunTag("t", "1")]),
        "log a param": lambda run: client.log_param(run, "p", "1"),
        "set a tag": lambda run: client.set_tag(run, "note", "mate's"),
        "delete a tag": lambda run: client.delete_tag(run, "note"),
    }
    experiment = {
        "rename the experiment": lambda: client.rename_experiment(team.shared, "renamed-by-mate"),
        "set its tag": lambda: client.set_experiment_tag(team.shared, "note", "mate's"),
        "delete its tag": lambda: client.delete_experiment_tag(team.shared, "mlflow.experimentKind"),
    }
    with as_user(*team.mate):
        refused = {what: status_of(lambda: change(theirs)) for what, change in changes.items()}
        refused.update({what: status_of(change) for what, change in experiment.items()})
        mine = client.create_run(team.shared, tags={"note": "mate's", "mlflow.user": "owner"})
        allowed = {what: status_of(lambda: change(mine.info.run_id)) for what, change in changes.items()}
    assert refused == dict.fromkeys(refused, 403)
    assert allowed == dict.fromkeys(allowed, 200)
    assert mine.info.user_id == "mate"  # the login, whatever the client claims
    with as_user(*team.owner):
        run = client.get_run(theirs)
        assert (run.info.status, run.info.run_name == "renamed-by-mate") == ("RUNNING", False)
        assert run.data.metrics == {"loss": 1.0} and run.data.params == {}
        assert run.data.tags["note"] == "owner's" and "t" not in run.data.tags
        assert Path(client.download_artifacts(theirs, "secret/private_secret.txt",
                                              str(tmp_path))).read_text() == SECRET
        exp = client.get_experiment(team.shared)
        assert exp.name == "catgan" and "note" not in exp.tags and "mlflow.experimentKind" in exp.tags


def test_the_server_runs_unprivileged_and_writes_only_into_runs_in_its_store(team, tmp_path):
    from mlflow.tracking import MlflowClient

    unprivileged = os.geteuid() == 0  # else it runs as whoever started it
    uid = pwd.getpwnam(server.MLFLOW_USER).pw_uid if unprivileged else os.geteuid()
    members = group_members(mlflow_pid_of(team.folder))
    statuses = [dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text()
                     .splitlines() if ":\t" in line) for pid in members]
    assert len(members) >= 3  # mlflow server, uvicorn, its workers
    assert {int(s["Uid"].split()[0]) for s in statuses} == {uid}
    # No capability, or at most reading past folder permissions (CAP_DAC_READ_SEARCH, bit 2).
    assert {int(s["CapEff"], 16) & ~(1 << 2) for s in statuses} == {0}
    files = list((team.folder / "artifacts").rglob("*"))
    assert files and {p.stat().st_uid for p in files} == {uid}

    elsewhere = tmp_path / "elsewhere"
    client = MlflowClient(team.url)
    with as_user(*team.mate):
        with pytest.raises(Exception) as err:
            client.create_experiment("elsewhere", artifact_location=elsewhere.as_uri())
        assert client.get_experiment_by_name("elsewhere") is None
    assert str(err.value) == ("INVALID_PARAMETER_VALUE: experiments get their artifact location "
                              "from the team server: leave artifact_location out (it named "
                              f"'{elsewhere.as_uri()}')")
    run = team.runs[team.shared]
    for where in (f"{team.shared}/planted.txt", f"{team.shared}/{run}/planted.txt", "planted.txt"):
        assert raw(team.url, "PUT", f"{ARTIFACTS}/{where}", team.owner, b"x")[0] in (400, 403), where
    assert not elsewhere.exists() and not list((team.folder / "artifacts").rglob("planted.txt"))
    if unprivileged:  # what the OS lets that user do, whatever MLflow would try
        writable = [subprocess.run(["runuser", "-u", server.MLFLOW_USER, "--", "test", "-w", str(p)],
                                   timeout=30).returncode == 0
                    for p in (team.folder, team.folder / "credentials", team.folder / "artifacts")]
        assert writable == [False, False, True]


@pytest.mark.skipif(os.geteuid() != 0, reason="the server changes user only when started as root")
def test_mlflow_s_user_may_read_and_test_code_in_a_folder_only_root_enters_and_write_nothing_there(
        tmp_path):
    # A clone in `mktemp -d` puts the venv there; alembic tests its folder with os.access, which
    # the kernel answers as the real user unless the capability survives it (no_setuid_fixup).
    locked = tmp_path / "locked"
    (locked / "pkg").mkdir(parents=True)
    (locked / "pkg" / "code.py").write_text("x = 1\n")
    locked.chmod(0o700)
    user = server._mlflow_user()
    check = ("import os, sys; p = sys.argv[1]; print(os.access(p, os.F_OK), open(p + '/code.py').read(),"
             " end=''); open(p + '/planted', 'w')")
    done = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", "--no-new-privs", *server.READ_PAST_FOLDERS, "--",
                           "/usr/bin/python3", "-c", check, str(locked / "pkg")],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "True x = 1\n"
    assert "PermissionError" in done.stderr and not (locked / "pkg" / "planted").exists()


def test_routes_catgan_never_uses_are_refused_and_the_list_of_users_is_for_admins(team):
    unused = [("POST", "/ajax-api/3.0/mlflow/demo/generate"),
              ("GET", "/ajax-api/3.0/mlflow/gateway/supported-models"),
              ("POST", "/ajax-api/3.0/mlflow/assistant/skills/install"),
              ("GET", "/ajax-api/3.0/mlflow/assistant/config"), ("POST", f"{API}/webhooks"),
              ("POST", "/ajax-api/3.0/jobs/search"), ("POST", "/v1/traces"),
              ("POST", f"{API}/logged-models"), ("POST", f"{API}/runs/log-model"),
              ("POST", "/ajax-api/2.0/mlflow-artifacts/mpu/create/1/x"), ("GET", "/signup")]
    for method, path in unused:
        for login in (team.mate, team.admin, None):
            status, body = raw(team.url, method, path, login, b"{}" if method == "POST" else None)
            assert status == 403 and b"does not serve" in body, (method, path, status, body)
    assert raw(team.url, "GET", f"{API}/users/list", team.mate)[0] == 403
    assert raw(team.url, "GET", f"{API}/users/list", None)[0] == 401
    status, body = raw(team.url, "GET", f"{API}/users/list", team.admin)
    assert status == 200 and {u["username"] for u in json.loads(body)["users"]} >= {"owner", "mate"}
    status, body = raw(team.url, "GET", f"{API}/experiments/search?max_results=100", team.admin)
    assert "MLflow Demo" not in body.decode()


@pytest.fixture(scope="module")
def trained(team, tmp_path_factory):
    """A tiny run of each variant, logged by `mate` into an experiment of his own, the fused one
    with its generator, as the train stage logs them."""
    folder = tmp_path_factory.mktemp("trained")

    def log_fused_generator(params, result) -> None:
        if params.model.variant == "fused":
            log_generator(params, result, tracker)

    with as_user(*team.mate):
        tracker = trackclient.MlflowTracker(team.url, "catgan-ui", folder / "unused")
        results = train_each_variant(tracker, params_of, smooth_images(), folder, log_fused_generator)
    return tracker.experiment_id, results, folder


def test_catgan_s_commands_work_through_the_gate(team, trained, tmp_path, capsys):
    """compare from the server and --register, sample from a run and from the registered model;
    the train stage's logging is test_server_auth's."""
    _, results, _ = trained
    fused = results["fused"].run_id
    common = ["--tracking-uri", team.url, "-n", "3", "--seed", "5"]
    with as_user(*team.mate):
        assert main(["compare", "--from", "mlflow", "--tracking-uri", team.url, "--experiment",
                     "catgan-ui", "--out", str(tmp_path / "cmp"), "--register"]) == 0
        assert "catgan-fused@best = version 1: run fused-seed0" in capsys.readouterr().out
        assert main(["sample", fused, "--out", str(tmp_path / "run"), *common]) == 0
        assert main(["sample", "models:/catgan-fused@best", "--out", str(tmp_path / "best"), *common]) == 0
    from PIL import Image

    drawn = [np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*.png"))])
             for name in ("run", "best")]
    assert drawn[0].shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(*drawn)


def test_the_ui_pages_work_through_the_gate_logged_in(team, trained):
    """test_ui's checks, logged in; the gate refuses the UI nothing but the routes it means to
    (the assistant's, the UI's telemetry)."""
    browser = chromium()
    experiment_id, results, folder = trained
    fused = results["fused"]
    log = team.folder / "mlflow.log"
    start = log.stat().st_size
    # What the run pages ask at times: the gateway's endpoints (none), by a path with a '/' at its end.
    status, body = raw(team.url, "GET", "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path="
                       "api%2F2.0%2Fendpoints%2F", team.mate)
    assert (status, json.loads(body)) == (200, {"endpoints": []})
    check_artifact_api(team.url, fused, folder / "fused" / "grids", team.mate)
    check_experiment_kind(team.url, experiment_id, team.mate)
    with as_user(*team.mate):  # runs_page asks the server for the experiment's id
        check_pages(team.url, browser, team.url, "catgan-ui", experiment_id, fused, team.mate,
                    ROOT / "test-artifacts" / "mlflow-ui-team-server.png")
    with open(log, "rb") as text:
        text.seek(start)
        refused = [line for line in text.read().decode(errors="replace").splitlines()
                   if line.startswith("refused ")]
    assert [line for line in refused if "does not serve" not in line] == [], refused


def test_a_dead_first_process_still_leaves_stop_stopping_the_server_and_start_starting_it(team, capsys):
    group, port = mlflow_pid_of(team.folder), int(team.url.rsplit(":", 1)[1])
    os.kill(group, signal.SIGKILL)  # `mlflow server` alone: uvicorn and its workers live on
    os.waitpid(group, 0)  # the fixture's start made it this process's child
    assert group_members(group) and raw(team.url, "GET", "/health")[0] == 200
    assert main(["server", "stop", "--dir", str(team.folder)]) == 0
    assert capsys.readouterr().out == f"stopped the MLflow server and PostgreSQL of {team.folder}\n"
    assert group_members(group) == []
    check_port("127.0.0.1", port, "the MLflow server", "SERVER_PORT")  # free again
    assert main(["server", "start", "--auth", "1", "--port", str(port), "--dir", str(team.folder)]) == 0
    assert raw(team.url, "GET", f"{API}/experiments/get?experiment_id={team.shared}", team.mate)[0] == 200


CLIENTS, STEPS, KEYS = 8, 20, 25  # 4,000 values, 25 in each log_batch call


def test_8_clients_logging_through_a_kill_9_of_the_server_keep_every_value_once(team, tmp_path,
                                                                              monkeypatch):
    """Each client is a tracker as the train stage has one (half of them owner's, half mate's),
    logging a step of 25 metrics at a time; the server's whole process group is killed mid-run
    and `make server` starts it again while the clients go on."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(trackclient, "RESEND_AFTER", 2.0)  # the 10 s between tries, shortened
    progress, back = [0] * CLIENTS, threading.Event()

    def client(i: int) -> str:
        login = (team.owner, team.mate)[i % 2]
        tracker = trackclient.MlflowTracker(secret_uri(team.url, *login), "catgan", tmp_path)
        tracker.start({"client": i}, {})
        for step in range(1, STEPS + 1):
            tracker.log_metrics({f"load.m{k:02d}": value(i, step, k) for k in range(KEYS)}, step)
            progress[i] = step
            time.sleep(0.1)
        back.wait(timeout=600)  # a stage still running when the server is back
        tracker.finish()
        return tracker.run_id

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        runs = [pool.submit(client, i) for i in range(CLIENTS)]
        while min(progress) < STEPS // 4:
            assert not any(run.done() for run in runs), [run.exception() for run in runs]
            time.sleep(0.05)
        killed_at = list(progress)
        kill_mlflow(team.folder)
        restart = time.monotonic()
        port = team.url.rsplit(":", 1)[1]
        made = subprocess.run(["make", "-C", str(ROOT), "server", f"SERVER_DIR={team.folder}",
                               f"SERVER_PORT={port}", "SERVER_AUTH=1"], capture_output=True,
                              text=True, timeout=300)
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
        restart = time.monotonic() - restart
        back.set()
        run_ids = [run.result(timeout=600) for run in runs]
    assert max(killed_at) < STEPS  # killed mid-run

    client = MlflowClient(team.url)
    held = 0
    with as_user(*team.admin):
        for i, run_id in enumerate(run_ids):
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.info.user_id == ("owner", "mate")[i % 2]
            for k in range(KEYS):
                history = client.get_metric_history(run_id, f"load.m{k:02d}")
                assert sorted((m.step, m.value) for m in history) == [
                    (step, value(i, step, k)) for step in range(1, STEPS + 1)], (i, k)
                held += len(history)
    print(f"{held} of {CLIENTS * STEPS * KEYS} values held once; killed at steps {killed_at}; "
          f"`make server` back in {restart:.1f} s; {time.monotonic() - started:.1f} s in all")


def value(client: int, step: int, key: int) -> float:
    return client * 10_000 + step * 100 + key
