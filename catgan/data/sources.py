"""The fetch stage: raw images from Kaggle, a local folder or zip, or the synthetic generator."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from catgan.data.archive import safe_extract_zip
from catgan.errors import UserError
from catgan.fileio import atomic_dir

log = logging.getLogger(__name__)

SOURCES = ("kaggle", "folder", "synthetic")

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
    """The secret values kaggle 2.2.5 could authenticate with; empty when it would find none.

    They are also what must never reach a log or an error message.
    """
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


def _describe(err: Exception, secrets: list[str]) -> str:
    """The error as text, with every credential value masked."""
    text = f"{type(err).__name__}: {err}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _kaggle_api(dataset: str, secrets: list[str]):
    """An authenticated KaggleApi; kaggle's own help text and exit(1) become one UserError."""
    # Importing kaggle authenticates and prints to stdout; keep stdout clean for the caller.
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise UserError(f"Kaggle did not accept the credentials found. {NO_CREDENTIALS}") from None
    except ImportError as err:
        raise UserError(f"data.source=kaggle needs the kaggle package ({err}); "
                        "install it with `pip install kaggle==2.2.5`") from None
    except Exception as err:
        raise UserError(f"could not sign in to Kaggle to fetch '{dataset}': "
                        f"{_describe(err, secrets)}; check your network") from None
    return api


def _download(api, dataset: str, dest_dir: Path) -> None:
    """The only network call: Kaggle writes ``<slug>.zip`` into ``dest_dir``."""
    with contextlib.redirect_stdout(sys.stderr):
        api.dataset_download_files(dataset, path=str(dest_dir), quiet=True, unzip=False)


def fetch_kaggle(dataset: str, out_dir: Path) -> None:
    """Download Kaggle ``dataset`` (owner/name) and replace ``out_dir`` with its extracted files."""
    parts = dataset.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"data.kaggle_dataset must look like 'owner/name' or 'owner/name/version', "
                        f"got {dataset!r}")
    secrets = kaggle_secrets()
    if not secrets:
        raise UserError(NO_CREDENTIALS)
    api = _kaggle_api(dataset, secrets)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside out_dir so the download lands on the same disk; removed whatever happens.
    download = tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.download.", dir=out_dir.parent)
    with download as tmp:
        try:
            _download(api, dataset, Path(tmp))
        except Exception as err:
            raise UserError(
                f"could not download Kaggle dataset '{dataset}' (data.kaggle_dataset): "
                f"{_describe(err, secrets)}; check the name and your network"
            ) from None
        zips = sorted(Path(tmp).glob("*.zip"))
        if len(zips) != 1:
            names = sorted(p.name for p in Path(tmp).iterdir())
            raise UserError(f"Kaggle dataset '{dataset}': expected one zip from the download, "
                            f"got {names}")
        try:
            count = safe_extract_zip(zips[0], out_dir)
        except UserError as err:
            raise UserError(f"Kaggle dataset '{dataset}': {err}") from None
    log.info("fetched %d files of Kaggle dataset %s into %s", count, dataset, out_dir)


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _warn_unlisted(err: OSError) -> None:
    """os.walk's onerror: a folder that cannot be listed is left out, but not silently."""
    log.warning("data.path: skipping %s (%s)", err.filename, err.strerror)


def fetch_folder(path: Path, out_dir: Path) -> int:
    """Replace ``out_dir`` with a copy of the folder or .zip at ``path``; return a file count."""
    src, out_dir = Path(path), Path(out_dir)
    if not src.exists():
        raise UserError(f"data.path: {str(path)!r} does not exist; set data.path to a folder of "
                        "images or a .zip of them")
    if _overlaps(src, out_dir):
        raise UserError(f"data.path: {src} overlaps the fetch output {out_dir}; "
                        "point it somewhere else")
    if src.is_file():
        if src.suffix.lower() != ".zip":
            raise UserError(f"data.path: {src} is a file but not a .zip; give a folder or a .zip")
        return safe_extract_zip(src, out_dir)
    if not src.is_dir():  # reading a FIFO or a device could block or never end
        raise UserError(f"data.path: {src} is neither a folder nor a file (a FIFO or a device?); "
                        "give a folder of images or a .zip of them")
    count, seen = 0, set()
    with atomic_dir(out_dir) as tmp:
        for root, dirs, files in os.walk(src, followlinks=True, onerror=_warn_unlisted):
            # Linked folders are followed, as users expect; remembering real paths stops loops.
            seen.add(os.path.realpath(root))
            dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen)
            rel = Path(root).relative_to(src)
            for name in sorted(files):
                source = Path(root, name)
                if not source.is_file():
                    log.warning("data.path: skipping %s (broken link or special file)", source)
                    continue
                (tmp / rel).mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(source, tmp / rel / name)
                except PermissionError:
                    log.warning("data.path: skipping %s (not readable)", source)
                    continue
                count += 1
    return count


def fetch(source: str, out_dir: Path, *, kaggle_dataset: str, path: str, synthetic_count: int,
          seed: int) -> None:
    """Replace ``out_dir`` as a whole with raw images from ``source`` (one of SOURCES)."""
    out_dir = Path(out_dir)
    if source == "kaggle":
        fetch_kaggle(kaggle_dataset, out_dir)
    elif source == "folder":
        if not path:
            raise UserError("data.path is empty; data.source=folder needs data.path set to a "
                            "folder of images or a .zip of them")
        fetch_folder(Path(path), out_dir)
    elif source == "synthetic":
        from catgan.data.synthetic import write_synthetic

        with atomic_dir(out_dir) as tmp:
            write_synthetic(tmp, synthetic_count, seed)
    else:
        raise UserError(f"data.source: {source!r} is not one of {', '.join(SOURCES)}")
