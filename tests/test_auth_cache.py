"""The team server remembers a verified login for a minute: MLflow's basic auth otherwise checks
the password (scrypt, about 0.3 s of the server's CPU here) on every request of every run."""
from __future__ import annotations

import pytest

from catgan.tracking import auth as serverauth


@pytest.mark.slow  # MLflow's server package takes seconds to import
def test_the_team_server_caches_a_verified_login_for_a_minute(tmp_path, monkeypatch):
    env = serverauth.server_env(tmp_path, f"sqlite:///{tmp_path / 'auth.db'}")
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", env["MLFLOW_AUTH_CONFIG_PATH"])
    from mlflow.server.auth.config import read_auth_config  # what the server's workers read

    assert read_auth_config().auth_cache_ttl_seconds == 60
