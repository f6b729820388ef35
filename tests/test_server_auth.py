"""The team server with MLflow's basic-auth app (catgan.tracking.auth): on by default off loopback,
forced on here on 127.0.0.1 as SERVER_AUTH=1 does. Without credentials a train stage stops in one
line, with a teammate's it logs its whole run, a wrong password is refused and recorded nowhere,
one teammate reads another's experiment but cannot change it, and a restart keeps the admin's
password."""
from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
from mlflowserver import (MARK, PASSWORD, assert_complete, call, files_holding_mark, search_runs,
                          secret_uri, team_server)
from test_stages import run_stage, stage_env

from catgan.cli import main
from catgan.errors import UserError
from catgan.tracking import server
from catgan.tracking import auth as serverauth
from conftest import ROOT, TINY, merge, write_params

slow = pytest.mark.slow
EPOCHS, STEPS_PER_EPOCH = TINY["train"]["epochs"], TINY["train"]["steps_per_epoch"]
CREDENTIAL_HINT = ("(HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the "
                   "ones in the credentials file the server's admin made for you (`make server-user "
                   "NAME=<you>`), or put that file at ~/.mlflow/credentials")


@pytest.mark.parametrize("host, setting, on", [
    ("0.0.0.0", None, True), ("::", None, True), ("127.0.0.1", None, False),
    ("localhost", None, False), ("::1", None, False), ("127.0.0.1", True, True),
    ("0.0.0.0", False, False)])
def test_auth_is_on_unless_the_server_serves_loopback_only_or_server_auth_says(host, setting, on):
    assert serverauth.wanted(host, setting) is on


def test_auth_turned_off_on_a_reachable_host_is_said_in_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="catgan.tracking.auth"):
        serverauth.warn_if_open("127.0.0.1", False)
        serverauth.warn_if_open("0.0.0.0", None)
        serverauth.warn_if_open("0.0.0.0", True)
        assert caplog.messages == []
        serverauth.warn_if_open("0.0.0.0", False)
    assert caplog.messages == ["the MLflow server on 0.0.0.0 runs without authentication "
                               "(SERVER_AUTH=0): anyone who can reach it can read, change and "
                               "delete every run"]


def test_make_passes_server_auth_and_the_new_user_s_name():
    def dry_run(*args: str) -> str:
        """What make would run, one space between words (recipe lines joined)."""
        return " ".join(subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True,
                                       text=True, check=True).stdout.replace("\\\n", " ").split())

    assert "--auth" not in dry_run("server")
    assert "--host 0.0.0.0 --port 5000 --dir .server --auth 0" in dry_run(
        "server", "SERVER_HOST=0.0.0.0", "SERVER_AUTH=0")
    assert 'catgan.tracking.server add-user "alice" --dir .server' in dry_run("server-user", "NAME=alice")


def test_credentials_files_are_0600_from_the_start_and_read_back(tmp_path):
    path = serverauth.credentials_file(tmp_path, "alice")
    serverauth.write_credentials(path, "alice", "p%ss=w0rd;#x")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert serverauth.read_credentials(path) == ("alice", "p%ss=w0rd;#x")
    # The format MLflow's clients read from ~/.mlflow/credentials.
    assert path.read_text().splitlines()[:2] == ["[mlflow]", "mlflow_tracking_username = alice"]


def test_a_file_that_is_not_a_credentials_file_is_named_in_one_line(tmp_path):
    path = tmp_path / "alice"
    path.write_text("[mlflow]\nmlflow_tracking_username = alice\n")
    with pytest.raises(UserError) as err:
        serverauth.read_credentials(path)
    assert str(err.value) == (f"{path} is not a credentials file: it needs a [mlflow] section with "
                              "mlflow_tracking_username and mlflow_tracking_password; delete it, "
                              "and the next start (admin) or add-user makes a new one")


@pytest.mark.parametrize("name", ["../admin", ".hidden", "a b", "", "x" * 65])
def test_an_unusable_user_name_is_refused_before_anything_is_written(tmp_path, name):
    with pytest.raises(UserError, match="is not usable: use letters, digits"):
        serverauth.add_user(tmp_path, name, lambda: pytest.fail("asked for the server"), "catgan")
    assert list(tmp_path.iterdir()) == []


def test_adding_a_user_to_a_server_that_never_ran_with_auth_says_how_to_turn_it_on(tmp_path):
    with pytest.raises(UserError) as err:
        serverauth.add_user(tmp_path, "alice", lambda: pytest.fail("asked for the server"), "catgan")
    assert str(err.value) == (f"the MLflow server of {tmp_path} has never run with authentication "
                              f"(no {tmp_path}/credentials/admin); restart it with SERVER_AUTH=1")


@pytest.fixture(scope="module")
def team():
    with team_server(auth=True) as (url, folder):
        yield url, folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("data")
    write_params(project, TINY)
    run_stage(project, "fetch")
    run_stage(project, "preprocess")
    return project


def add_user(folder: Path, name: str, capsys) -> tuple[str, str]:
    """``name`` added with `catgan server add-user`; the user and password from the file it names."""
    assert main(["server", "add-user", name, "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    path = serverauth.credentials_file(folder, name)
    assert out == (f"added user '{name}' to the MLflow server of {folder}, who may log runs into "
                   f"experiment 'catgan'; their credentials are in {path}: hand them that file, to "
                   "put at ~/.mlflow/credentials\n")
    assert path.stat().st_mode & 0o777 == 0o600
    user = serverauth.read_credentials(path)
    assert user[1] not in out
    return user


def admin_url(url: str, folder: Path) -> str:
    return secret_uri(url, *serverauth.read_credentials(serverauth.credentials_file(folder, "admin")))


def train(project: Path, env: dict) -> subprocess.CompletedProcess:
    """The train stage, with no MLflow settings but ``env``, and a home without ~/.mlflow."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / "train.py")], cwd=project,
                          env={**stage_env(project), "HOME": str(project), **env},
                          capture_output=True, text=True, timeout=300)


def project_for(data: Path, dest: Path, url: str) -> Path:
    dest.mkdir()
    (dest / "data").symlink_to(data / "data")
    write_params(dest, merge(TINY, {"tracking": {"enabled": True, "uri": url}}))
    return dest


def refused(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a stage stopped by the server, before it trained."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def served_runs(url: str, folder: Path) -> list[dict]:
    try:
        return search_runs(admin_url(url, folder))
    except urllib.error.HTTPError as err:
        if err.code != 404:  # 404: no experiment 'catgan' yet
            raise
        return []


@slow
def test_a_stage_without_credentials_stops_in_one_line_naming_the_two_variables(team, data,
                                                                                 tmp_path):
    url, folder = team
    project = project_for(data, tmp_path / "project", url)
    proc = train(project, {})
    assert refused(proc) == f"error: MLflow tracking server {url} asks for a user and password " \
                            + CREDENTIAL_HINT
    assert not (project / "models").exists()


@slow
def test_a_teammate_s_credentials_log_the_whole_run(team, data, tmp_path, capsys):
    url, folder = team
    user, password = add_user(folder, "alice", capsys)
    project = project_for(data, tmp_path / "project", url)
    proc = train(project, {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert password not in proc.stdout + proc.stderr
    run_id = json.loads((project / "models" / "run.json").read_text())["mlflow_run_id"]
    assert_complete(admin_url(url, folder), run_id, EPOCHS, EPOCHS * STEPS_PER_EPOCH)


@slow
def test_a_wrong_password_is_refused_and_recorded_nowhere(team, data, tmp_path, capsys):
    url, folder = team
    user, _ = add_user(folder, "bob", capsys)
    before = served_runs(url, folder)
    log = folder / "mlflow.log"
    refusals = log.read_text().count('" 401')
    for name, uri, env in (
            ("env", url, {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": PASSWORD}),
            ("uri", "", {"MLFLOW_TRACKING_URI": secret_uri(url, user)})):
        project = project_for(data, tmp_path / name, uri)
        proc = train(project, env)
        shown = url.replace("http://", f"http://{user}:***@") if name == "uri" else url
        assert refused(proc) == (f"error: MLflow tracking server {shown} refused the user and "
                                 "password given " + CREDENTIAL_HINT)
        assert MARK not in proc.stdout + proc.stderr
        assert files_holding_mark(project) == []
    assert log.read_text().count('" 401') >= refusals + 2  # the server was asked, and said no
    assert served_runs(url, folder) == before
    # The server's logs, its PostgreSQL cluster (store and users), artifacts and credentials.
    assert files_holding_mark(folder) == []


@slow
def test_no_password_shows_in_a_process_listing(team, capsys):
    _, folder = team
    passwords = [serverauth.read_credentials(serverauth.credentials_file(folder, "admin"))[1],
                 add_user(folder, "gina", capsys)[1]]
    cmdlines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            cmdlines.append(path.read_bytes())
    assert any(b"catgan-auth" in cmdline for cmdline in cmdlines)  # the server is among them
    assert [p for p in passwords if any(p.encode() in cmdline for cmdline in cmdlines)] == []


@slow
def test_a_teammate_reads_another_teammate_s_experiment_and_cannot_change_it(team, capsys, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    url, folder = team
    users = {name: add_user(folder, name, capsys) for name in ("carol", "dave")}
    client = MlflowClient(url)

    def as_user(name: str) -> MlflowClient:
        for var, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), users[name]):
            monkeypatch.setenv(var, value)
        return client

    experiment = as_user("carol").create_experiment("carol-only")
    run = client.create_run(experiment)
    # The team reads every experiment: dave reads carol's...
    assert as_user("dave").get_run(run.info.run_id).info.experiment_id == experiment
    # ...but neither logs into it nor deletes it, nor the run in it.
    for change, target in ((client.create_run, experiment), (client.delete_experiment, experiment),
                           (client.delete_run, run.info.run_id)):
        with pytest.raises(MlflowException) as err:
            change(target)
        assert err.value.get_http_status_code() == 403
    assert as_user("carol").get_experiment(experiment).lifecycle_stage == "active"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"
    as_user("carol").delete_experiment(experiment)  # its creator may
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"


@slow
def test_adding_a_user_again_needs_their_file_gone_and_gives_a_new_password(team, capsys, caplog):
    url, folder = team
    _, first = add_user(folder, "erin", capsys)
    path = serverauth.credentials_file(folder, "erin")
    with pytest.raises(UserError) as err:
        serverauth.add_user(folder, "erin", lambda: url, "catgan")
    assert str(err.value) == (f"user 'erin' was added already; their credentials are in {path} "
                              "(delete it and add them again to give them a new password)")
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="catgan.tracking.auth"):
        _, second = add_user(folder, "erin", capsys)
    assert caplog.messages == ["user 'erin' was on the server without a credentials file: they "
                               "have a new password"]
    assert second != first
    assert user_status(url, "erin", second) == 200 and user_status(url, "erin", first) == 401


def user_status(url: str, name: str, password: str) -> int:
    """The server's answer to ``name`` asking for their own user record."""
    try:
        with call(secret_uri(url, name, password) + f"/api/2.0/mlflow/users/get?username={name}"):
            return 200
    except urllib.error.HTTPError as err:
        return err.code


@slow
def test_a_restart_keeps_the_admin_password_and_a_lost_one_is_replaced(team, capsys):
    """Also across a start with SERVER_AUTH=0, which lets anyone in and adds no user."""
    url, folder = team
    admin = serverauth.credentials_file(folder, "admin")
    first = admin.read_bytes()
    first_password = serverauth.read_credentials(admin)[1]

    def restart(auth: str) -> None:
        server.stop(folder)
        assert main(["server", "start", "--auth", auth, "--port", url.rsplit(":", 1)[1],
                     "--dir", str(folder)]) == 0
        out = capsys.readouterr().out
        said = (f"Users must log in: the admin's credentials are in {admin}; `make server-user "
                "NAME=<name>` adds a teammate")
        assert (said in out) == (auth == "1")
        assert serverauth.read_credentials(admin)[1] not in out

    restart("0")
    with call(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") as response:
        assert response.status == 200  # no credentials asked
    with pytest.raises(UserError) as err:
        serverauth.add_user(folder, "frank", lambda: url, "catgan")
    assert str(err.value) == (f"the MLflow server of {folder} at {url} runs without "
                              "authentication; restart it with SERVER_AUTH=1 to add users")
    assert not serverauth.credentials_file(folder, "frank").exists()

    restart("1")
    assert admin.read_bytes() == first and user_status(url, "admin", first_password) == 200

    admin.unlink()
    restart("1")
    second_password = serverauth.read_credentials(admin)[1]
    assert admin.stat().st_mode & 0o777 == 0o600 and second_password != first_password
    assert user_status(url, "admin", second_password) == 200
    assert user_status(url, "admin", first_password) == 401
    assert "password" not in (folder / "basic_auth.ini").read_text()
