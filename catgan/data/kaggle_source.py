"""The Kaggle source: one dataset version's zip through the official client, with bounded waits
and one-line errors that say where the credentials came from (never their value)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from catgan.data.archive import extract_zip
from catgan.errors import UserError

NO_CREDENTIALS = (
    "data.source=kaggle needs Kaggle API credentials, and none were found. Create a token at "
    "https://www.kaggle.com/settings/api and either save kaggle.json as ~/.kaggle/kaggle.json "
    "(or $KAGGLE_CONFIG_DIR/kaggle.json, mode 600), save the token as ~/.kaggle/access_token, or "
    "export KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN). To run without Kaggle, use the "
    "synthetic set: `dvc exp run -S data.source=synthetic` or `make demo`."
)


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _kaggle_config_dir() -> Path:
    """Where kaggle 2.2.5 looks for kaggle.json (it falls back to XDG when ~/.kaggle is absent)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def kaggle_secrets() -> list[str]:
    """The secret values kaggle 2.2.5 could authenticate with (empty when it would find none):
    what must never reach a log or an error message."""
    home = Path.home() / ".kaggle"
    secrets = []
    env = os.environ
    if env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_DATA_PROXY_URL") \
            and env.get("KAGGLE_API_V1_TOKEN"):
        secrets.append(_read_token(Path(env["KAGGLE_API_V1_TOKEN"])))
    token = env.get("KAGGLE_API_TOKEN", "")
    if token:
        secrets.append(_read_token(Path(token)) if Path(token).exists() else token)
    secrets += [_read_token(home / "access_token"), _read_token(home / "access_token.txt")]
    config = _read_json(_kaggle_config_dir() / "kaggle.json")
    config.update({k[7:].lower(): v for k, v in env.items() if k.startswith("KAGGLE_")})
    if config.get("username") and config.get("key"):
        secrets.append(str(config["key"]))
    secrets.append(str(_read_json(home / "credentials.json").get("refresh_token") or ""))
    return [s for s in secrets if s]


def _api_class():
    """KaggleApi as the stage needs it; kaggle is imported here because importing it signs in."""
    import requests
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class TimeoutAdapter(requests.adapters.HTTPAdapter):
        def __init__(self, timeout_s: float):
            super().__init__()
            self.timeout_s = timeout_s

        def send(self, request, timeout=None, **kwargs):
            return super().send(request, timeout=timeout or self.timeout_s, **kwargs)

    class Api(KaggleApi):
        timeout_s = 60.0

        def build_kaggle_client(self):
            # KaggleApi pins api.kaggle.com unless --local, although kagglesdk honours
            # KAGGLE_API_ENVIRONMENT (TEST is http://localhost:7777, the tests' local Kaggle).
            client = KaggleClient(env=get_env(), verbose="--verbose" in self.args,
                                  username=self.config_values.get(self.CONFIG_NAME_USER),
                                  password=self.config_values.get(self.CONFIG_NAME_KEY),
                                  api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                                  response_processor=self.get_response_processor())
            # kagglesdk's session has no timeout: a stalled server would hang the stage for ever.
            http = client.http_client()
            http._init_session()
            for prefix in ("http://", "https://"):
                http._session.mount(prefix, TimeoutAdapter(self.timeout_s))
            return client

        def download_file(self, response, outfile, http_client, quiet=True, resume=False, **_):
            # One retry, not kaggle's five with up to a minute of backoff each.
            super().download_file(response, outfile, http_client, quiet, resume, max_retries=1,
                                  timeout=self.timeout_s)

    return Api


def _signed_in_api(dataset: str, secrets: list[str], timeout_s: float):
    """An authenticated client; kaggle's own help text and exit(1) become one UserError."""
    # Importing kaggle authenticates and prints to stdout; keep stdout clean for the caller.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api = _api_class()()
            api.timeout_s = timeout_s
            api.authenticate()
    except SystemExit:  # an access token Kaggle calls inactive, and no other credentials
        raise UserError(f"Kaggle dataset '{dataset}' (data.kaggle_dataset): Kaggle did not accept "
                        f"the credentials found ({_token_source()}); check them, or create a new token at "
                        "https://www.kaggle.com/settings/api") from None
    except ImportError as err:
        raise UserError(f"data.source=kaggle needs the kaggle package ({err}); "
                        "install it with `pip install kaggle==2.2.5`") from None
    except Exception as err:  # checking an access token is the one request signing in makes
        raise UserError(f"Kaggle dataset '{dataset}' (data.kaggle_dataset): could not sign in with "
                        f"{_token_source()}: {_failure(err, timeout_s, secrets)}") from None
    return api


def _token_source() -> str:
    from kagglesdk import get_access_token_from_env

    name = get_access_token_from_env()[1]
    return {"access_token": "~/.kaggle/access_token", None: "no access token"}.get(name, name)


def credential_source(api) -> str:
    """Where the signed-in client took its credentials from, named without their value."""
    method = api.config_values.get(api.CONFIG_NAME_AUTH_METHOD)
    if method == "ACCESS_TOKEN":
        where = _token_source()
    elif method == "OAUTH":
        where = "~/.kaggle/credentials.json (kaggle auth login)"
    else:
        where = "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else api.config
    return f"{where} (user '{api.config_values.get(api.CONFIG_NAME_USER)}')"


def _failure(err: BaseException, timeout_s: float, secrets: list[str]) -> str:
    """What went wrong, as the server or the network said it, and what to do about it."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    status = getattr(getattr(err, "response", None), "status_code", None)
    said = f"{type(err).__name__}: {err}"
    for secret in secrets:
        said = said.replace(secret, "***")
    # A stall inside the body reaches us as a ConnectionError wrapping urllib3's timeout.
    if isinstance(err, requests.Timeout) or any(isinstance(a, ReadTimeoutError) for a in err.args):
        return (f"no answer from Kaggle for {timeout_s:g} s ({said}); on a slow network raise "
                "data.kaggle_timeout_s in params.yaml")
    if status in (401, 403):
        return f"Kaggle refused the credentials (HTTP {status}: {said}); check them, or create " \
               "a new token at https://www.kaggle.com/settings/api"
    if status == 404:
        return f"no such dataset or version (HTTP 404: {said}); check data.kaggle_dataset in " \
               "params.yaml: owner/name[/version], as in the dataset's kaggle.com address"
    if status is not None:
        return f"the server answered HTTP {status} ({said}); run again later"
    if isinstance(err, (requests.ConnectionError, OSError, ValueError)):
        return f"the download failed ({said}); check your network and run again"
    return said


def _current_version(api, owner: str, slug: str) -> int | None:
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    request = ApiGetDatasetRequest()
    request.owner_slug, request.dataset_slug = owner, slug
    with api.build_kaggle_client() as kaggle:
        return kaggle.datasets.dataset_api_client.get_dataset(request).current_version_number or None


def fetch_kaggle(dataset: str, folder: Path, timeout_s: float = 60.0) -> dict:
    """Download Kaggle ``dataset`` (owner/name[/version]) and extract it into the empty ``folder``.

    Returns the record for the fetch manifest: the dataset, the version fetched, renamed files.
    """
    parts = dataset.split("/")  # its shape is checked by catgan.config
    secrets = kaggle_secrets()
    if not secrets:
        raise UserError(NO_CREDENTIALS)
    api = _signed_in_api(dataset, secrets, timeout_s)
    context = f"Kaggle dataset '{dataset}' (data.kaggle_dataset), signed in with " \
              f"{credential_source(api)}"
    folder = Path(folder)
    # Beside the output so the download lands on the same disk; removed whatever happens.
    # Named like folder's own temp, so a killed run's download is swept with it.
    with tempfile.TemporaryDirectory(prefix=folder.name.removesuffix(".tmp") + ".download.",
                                     suffix=".tmp", dir=folder.parent) as tmp:
        try:
            # Asked first, so the manifest names the version that was downloaded.
            version = int(parts[2]) if len(parts) == 3 else _current_version(api, *parts)
            ref = "/".join(parts[:2] + ([str(version)] if version else []))
            with contextlib.redirect_stdout(io.StringIO()):  # the dataset's address, nothing else
                api.dataset_download_files(ref, path=tmp, quiet=True, unzip=False)
        except Exception as err:
            raise UserError(f"{context}: {_failure(err, timeout_s, secrets)}") from None
        zips = sorted(Path(tmp).glob("*.zip"))
        if len(zips) != 1:
            names = sorted(p.name for p in Path(tmp).iterdir())
            raise UserError(f"{context}: expected one zip from the download, got {names}")
        try:
            files, renamed = extract_zip(zips[0], folder)
        except UserError as err:  # its temp path would say nothing to the user
            raise UserError(f"{context}: the downloaded zip of version {version} is unusable: "
                            f"{str(err).removeprefix(f'{zips[0]}: ')}") from None
    return {"source": "kaggle", "dataset": "/".join(parts[:2]), "version": version,
            "files": files, "renamed": renamed}
