"""fetch from folder, zip, synthetic and Kaggle: the output is replaced whole or not at all."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from catgan.config import parse_params
from catgan.data.kaggle_source import fetch_kaggle, kaggle_secrets
from catgan.data.preprocess import preprocess
from catgan.data.sources import MANIFEST, copy_folder, fetch
from catgan.errors import UserError
from imagefactory import (MESSY_DUPLICATES, MESSY_FOUND, MESSY_SKIPPED, MESSY_USED, tree_files,
                          write_messy_tree, zip_tree)

FAKE_KEY = "fake-kaggle-key-0123456789abcdef"


def fetch_args(**overrides):
    args = dict(kaggle_dataset="spandan2/cats-faces-64x64-for-generative-models", path="",
                synthetic_count=3, seed=0)
    return {**args, **overrides}


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_folder_and_zip_ingestion(tmp_path, layout):
    tree = write_messy_tree(tmp_path / "tree")
    prefix = "cats/" if layout == "zip" else ""  # the Kaggle zip layout: cats/<n>.jpg
    source = zip_tree(tree, tmp_path / "cats.zip", prefix) if layout == "zip" else tree
    raw = tmp_path / "data" / "raw"
    (raw / "stale.jpg").parent.mkdir(parents=True)
    (raw / "stale.jpg").write_bytes(b"from an older fetch")
    fetch("folder", raw, **fetch_args(path=str(source)))
    expected = {prefix + name: data for name, data in tree_files(tree).items()}
    record = json.loads(tree_files(raw).pop(MANIFEST))
    assert {k: v for k, v in tree_files(raw).items() if k != MANIFEST} == expected
    assert record == {"source": "folder", "files": len(expected), "renamed": {}}
    assert sorted(os.listdir(tmp_path / "data")) == ["raw"]

    manifest = preprocess(raw, tmp_path / "data" / "prepared", image_size=16, min_size=16,
                          dedup=True, max_bad_fraction=0.5, workers=2)
    skipped = {reason: [prefix + p for p in paths] for reason, paths in MESSY_SKIPPED.items()}
    assert manifest["skipped"] == skipped
    duplicates = {prefix + a: prefix + b for a, b in MESSY_DUPLICATES.items()}
    assert manifest["duplicates_removed"] == duplicates
    assert (manifest["files_found"], manifest["files_used"]) == (MESSY_FOUND, MESSY_USED)


def test_fetch_folder_follows_links_without_looping(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "1.jpg").write_bytes(b"one")
    os.symlink(src, src / "a" / "loop")
    os.symlink(src / "a", src / "b")
    os.symlink(src / "nowhere.jpg", src / "broken.jpg")
    (tmp_path / "raw").mkdir()
    assert copy_folder(src, tmp_path / "raw") == (2, {})
    assert tree_files(tmp_path / "raw") == {"a/1.jpg": b"one", "b/1.jpg": b"one"}


@pytest.mark.parametrize("case", ["missing", "empty_key", "not_zip", "inside_output"])
def test_folder_source_errors(tmp_path, case):
    raw = tmp_path / "raw"
    path = {"missing": str(tmp_path / "nowhere"), "empty_key": "",
            "not_zip": str(tmp_path / "cats.tar"), "inside_output": str(raw / "mine")}[case]
    message = {"missing": f"data.path: {path!r} does not exist; set data.path to a folder",
               "empty_key": "data.path is empty; data.source=folder needs data.path set",
               "not_zip": f"data.path: {path} is a file but not a .zip; give a folder or a .zip",
               "inside_output": f"data.path: {path} overlaps the fetch output {raw}; point it"}[case]
    if case == "not_zip":
        Path(path).write_bytes(b"tar")
    if case == "inside_output":
        Path(path).mkdir(parents=True)
    with pytest.raises(UserError) as err:
        fetch("folder", raw, **fetch_args(path=path))
    assert str(err.value).startswith(message), str(err.value)
    if case == "inside_output":
        assert Path(path).is_dir()  # replacing the output did not wipe the source
    else:
        assert not raw.exists()


def test_synthetic_and_unknown_source(tmp_path):
    raw = tmp_path / "raw"
    fetch("synthetic", raw, **fetch_args(synthetic_count=3, seed=1))
    assert sorted(os.listdir(raw)) == ["cat_00000.png", "cat_00001.png", "cat_00002.png"]
    with pytest.raises(UserError, match="data.source = 'ftp' is not allowed; expected one of "
                                        "kaggle, folder, synthetic"):
        parse_params({"data": {"source": "ftp"}})
    with pytest.raises(ValueError, match="'ftp'"):
        fetch("ftp", tmp_path / "other", **fetch_args())
    assert sorted(os.listdir(tmp_path)) == ["raw"]  # nothing half-made for the unknown source


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """An empty HOME and no KAGGLE_* variables: a machine that never saw Kaggle."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for key in list(os.environ):
        if key.startswith("KAGGLE_"):
            monkeypatch.delenv(key)
    return home


def test_kaggle_without_credentials(tmp_path, clean_home, capsys):
    with pytest.raises(UserError) as err:
        fetch("kaggle", tmp_path / "raw", **fetch_args())
    message = str(err.value)
    for hint in ("kaggle.json", "KAGGLE_USERNAME", "data.source=synthetic", "make demo"):
        assert hint in message
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("where", ["home_json", "config_dir_json", "xdg_json", "env_pair",
                                   "env_token", "token_file", "oauth_file", "username_only"])
def test_kaggle_credential_sources(tmp_path, clean_home, monkeypatch, where):
    kaggle_json = json.dumps({"username": "someone", "key": FAKE_KEY})
    if where == "home_json":
        (clean_home / ".kaggle").mkdir()
        (clean_home / ".kaggle" / "kaggle.json").write_text(kaggle_json)
    elif where == "config_dir_json":
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "kaggle.json").write_text(kaggle_json)
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    elif where == "xdg_json":  # kaggle's fallback when ~/.kaggle does not exist
        (clean_home / ".config" / "kaggle").mkdir(parents=True)
        (clean_home / ".config" / "kaggle" / "kaggle.json").write_text(kaggle_json)
    elif where == "env_pair":
        monkeypatch.setenv("KAGGLE_USERNAME", "someone")
        monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    elif where == "env_token":
        monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_KEY)
    elif where == "token_file":
        (clean_home / ".kaggle").mkdir()
        (clean_home / ".kaggle" / "access_token").write_text(FAKE_KEY + "\n")
    elif where == "oauth_file":
        (clean_home / ".kaggle").mkdir()
        oauth = json.dumps({"refresh_token": FAKE_KEY})
        (clean_home / ".kaggle" / "credentials.json").write_text(oauth)
    else:
        monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert kaggle_secrets() == ([] if where == "username_only" else [FAKE_KEY])


@pytest.mark.parametrize("name", ["just-a-name", "owner/name/latest", "a//b", "a/b/", "a b/c"])
def test_kaggle_dataset_name_checked_on_load(name):
    with pytest.raises(UserError, match=f"data.kaggle_dataset = '{name}' is not allowed; expected "
                                        "owner/name or owner/name/version"):
        parse_params({"data": {"kaggle_dataset": name}})


@pytest.mark.parametrize("name", ["spandan2/cats-faces-64x64-for-generative-models", "o/n/12"])
def test_kaggle_dataset_names_of_both_shapes_are_accepted(name):
    assert parse_params({"data": {"kaggle_dataset": name}}).data.kaggle_dataset == name


def test_kaggle_refusal_is_a_user_error(tmp_path, clean_home, monkeypatch, capsys):
    from kaggle.api.kaggle_api_extended import KaggleApi

    capsys.readouterr()  # what importing kaggle printed: it signs in on import
    # Kaggle looks elsewhere than the kaggle.json we found, so it prints its help and calls exit(1).
    monkeypatch.setattr(KaggleApi, "config", str(tmp_path / "elsewhere" / "kaggle.json"))
    (clean_home / ".kaggle").mkdir()
    kaggle_json = json.dumps({"username": "someone", "key": FAKE_KEY})
    (clean_home / ".kaggle" / "kaggle.json").write_text(kaggle_json)
    with pytest.raises(UserError, match="did not accept"):
        fetch_kaggle("spandan2/cats-faces-64x64-for-generative-models", tmp_path / "raw")
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "raw").exists()
