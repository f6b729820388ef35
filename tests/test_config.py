"""params.yaml validation: every mistake stops with one line naming the key, exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from catgan.config import Params, flatten, load_params, parse_params
from catgan.errors import UserError

from conftest import ROOT


def test_committed_params_describe_the_real_study():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "kaggle"
    assert params.data.kaggle_dataset == "spandan2/cats-faces-64x64-for-generative-models"
    assert (params.train.batch_size, params.model.latent_dim, params.train.epochs) == (128, 128, 60)
    assert params.train.lr == 0.0002 and params.train.betas == [0.5, 0.999]
    assert params.model.variant == "baseline"


def commented_keys(text: str) -> dict[str, str]:
    """``group.key`` -> its line, for each indented key line of params.yaml, found within the
    group whose unindented ``group:`` line comes last above it."""
    keys, group = {}, None
    for line in text.splitlines():
        name = line.split(":", 1)[0]
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        if not line.startswith(" "):
            group = name
        elif group:
            keys[f"{group}.{name.strip()}"] = line
    return keys


def test_every_key_in_the_schema_is_in_params_yaml_with_a_comment():
    text = (ROOT / "params.yaml").read_text()
    # The file itself, not parse_params: that fills in the defaults of keys the file lacks.
    assert sorted(flatten(yaml.safe_load(text))) == sorted(flatten(Params()))
    lines = commented_keys(text)
    for key in flatten(Params()):
        assert "#" in lines.get(key, ""), f"{key} has no one-line comment in params.yaml"


@pytest.mark.parametrize("raw, message", [
    ({"train": {"epoch": 3}}, "unknown key 'train.epoch'; did you mean 'train.epochs'"),
    ({"trian": {}}, "unknown key 'trian'; did you mean 'train'"),
    ({"train": {"zzz": 1}}, "unknown key 'train.zzz'; allowed: epochs"),
    ({"train": {"batch_size": "big"}}, "train.batch_size = 'big' is not allowed; expected an integer"),
    ({"train": {"batch_size": 2.5}}, "expected an integer"),
    ({"train": {"batch_size": True}}, "expected an integer"),
    ({"train": {"batch_size": 0}}, "train.batch_size = 0 is not allowed; expected a value >= 1"),
    ({"train": {"lr": "fast"}}, "train.lr = 'fast' is not allowed; expected a number"),
    ({"train": {"lr": float("nan")}}, "expected a finite number"),
    ({"train": {"betas": [0.5]}}, "train.betas = [0.5] is not allowed; expected a list of exactly 2"),
    ({"train": {"betas": [0.5, 1.5]}}, "train.betas[1] = 1.5 is not allowed; expected a value <="),
    ({"data": {"source": "s3"}}, "data.source = 's3' is not allowed; expected one of kaggle, folder"),
    ({"data": {"dedup": "yes"}}, "data.dedup = 'yes' is not allowed; expected true or false"),
    ({"data": {"max_bad_fraction": 2}}, "expected a value <= 1.0"),
    ({"model": 3}, "model must be a mapping"),
    ({"tracking": {"experiment": 7}}, "tracking.experiment = 7 is not allowed; expected a string"),
    ({"train": {"augment": "color,zoom"}}, "train.augment = 'color,zoom' is not allowed; expected '' "
     "(off) or a comma-separated list of color, translation, cutout"),
    ({"train": {"augment": "color, cutout"}}, "without spaces"),
    ({"train": {"augment": "color,"}}, "train.augment = 'color,' is not allowed"),
    ({"train": {"ema": 1}}, "train.ema = 1.0 is not allowed; expected a number in [0.0, 1.0)"),
    ({"train": {"ema": 1.5}}, "train.ema = 1.5 is not allowed; expected a number in [0.0, 1.0)"),
    ({"train": {"ema": -0.1}}, "train.ema = -0.1 is not allowed; expected a number in [0.0, 1.0)"),
    ({"train": {"ema": "0.999"}}, "train.ema = '0.999' is not allowed; expected a number"),
    ({"train": {"loss": "lsgan"}}, "train.loss = 'lsgan' is not allowed; expected one of "
     "non_saturating, saturating, rasgan, ralsgan, rpgan"),
    ({"model": {"d_norm": "yes"}}, "model.d_norm = 'yes' is not allowed; expected one of batchnorm, "
     "spectral, none"),
])
def test_schema_errors_name_the_key_value_and_what_is_allowed(raw, message):
    with pytest.raises(UserError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_the_recipe_keys_accept_what_they_document():
    params = parse_params({"model": {"d_norm": "spectral"},
                           "train": {"ema": 0.999, "augment": "translation,color", "loss": "ralsgan"}})
    assert (params.train.ema, params.train.augment, params.train.loss) == (0.999, "translation,color",
                                                                           "ralsgan")
    assert parse_params({"train": {"ema": 0}}).train.ema == 0.0
    assert params.model.d_norm == "spectral"


def test_ints_are_accepted_where_numbers_are_expected():
    params = parse_params({"train": {"lr": 1, "betas": [0, 0.9]}})
    assert params.train.lr == 1.0 and params.train.betas == [0.0, 0.9]


@pytest.mark.parametrize("content, message", [
    ("train:\n  epochs: [\n", "not valid YAML"),
    ("train:\n  epochz: 3\n", "did you mean 'train.epochs'"),
])
def test_stage_exits_2_with_one_line_and_no_traceback(tmp_path, content, message):
    (tmp_path / "params.yaml").write_text(content)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "fetch.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: params.yaml")
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found; run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_the_parameters_page_documents_every_params_key():
    page = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    table = page[page.index("## Every params key"):]
    missing = [key for key in flatten(Params()) if f"| `{key}` |" not in table]
    assert not missing, f"docs/parameters.md's parameter table lacks {missing}"


def test_a_password_in_tracking_uri_is_refused_without_echoing_it():
    with pytest.raises(UserError) as err:
        parse_params({"tracking": {"uri": "http://user:pl4nted-pw@127.0.0.1:5000"}})
    assert "MLFLOW_TRACKING_PASSWORD" in str(err.value) and "pl4nted-pw" not in str(err.value)
    assert parse_params({"tracking": {"uri": "http://127.0.0.1:5000"}}).tracking.uri
