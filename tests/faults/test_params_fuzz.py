"""params.yaml under random damage: load_params returns Params or raises one-line UserError naming
the key (or the file), never anything else; the stage scripts turn that into exit code 2.

Every key comes from walking catgan.config's dataclasses, so keys added later are fuzzed too. An
independent oracle, written from each field's metadata, says which documents must be accepted.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catgan.config import Params, flatten, load_params
from catgan.errors import UserError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def schema(cls=Params, prefix: str = "") -> dict[str, tuple[object, typing.Mapping]]:
    """Dotted key -> (type hint, field metadata) for every leaf of the params dataclasses."""
    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(schema(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (hints[f.name], f.metadata)
    return out


KEYS = schema()
GROUPS = [f.name for f in dataclasses.fields(Params)]
FIELDS = {g: {k.split(".", 1)[1] for k in KEYS if k.startswith(g + ".")} for g in GROUPS}
BASE = dataclasses.asdict(Params())
DEFAULTS = flatten(Params())


def test_schema_walk_sees_every_key():
    assert sorted(KEYS) == sorted(flatten(Params()))
    assert all(isinstance(BASE[g], dict) for g in GROUPS)


# -- the oracle --------------------------------------------------------------------------------

def acceptable(hint, meta: typing.Mapping, value) -> bool | None:
    """Whether ``value`` is allowed for a field; None for a hint this oracle does not know."""
    if hint is list:
        return isinstance(value, list) and len(value) == meta.get("length") and all(
            acceptable(float, meta, v) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint not in (int, float, str):
        return None
    if isinstance(value, bool) or not isinstance(value, {int: int, float: (int, float), str: str}[hint]):
        return False
    if hint is float and not (abs(value) < 1e308 and math.isfinite(value)):
        return False
    choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
    below, pattern = meta.get("below"), meta.get("pattern")
    return not ((choices and value not in choices) or (low is not None and value < low)
                or (high is not None and value > high) or (below is not None and value >= below)
                or (pattern and not re.fullmatch(pattern, value)))


def problems(doc, path: str) -> tuple[list[str], bool]:
    """(names an error may cite, whether the oracle could judge every key) for a loaded document."""
    if doc is None:
        return [], True
    if not isinstance(doc, dict):
        return [path], True
    bad, known = [], True
    for group, body in doc.items():
        if group not in GROUPS:
            bad.append(repr(group))
        elif not isinstance(body, dict):
            bad.append(f"{group} must be a mapping")
        else:
            for key, value in body.items():
                if key not in FIELDS[group]:
                    bad.append(repr(f"{group}.{key}"))
                    continue
                ok = acceptable(*KEYS[f"{group}.{key}"], value)
                known &= ok is not None
                if ok is False:
                    bad.append(f"{group}.{key}")
    return bad, known


def check_load(path: Path) -> Params | UserError:
    """load_params(path) must return Params or raise a short one-line UserError naming the file."""
    try:
        return load_params(path)
    except UserError as err:
        message = str(err)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 600, message[:600]
        return err


# -- strategies --------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from([10 ** 400, -(10 ** 400), 2 ** 63, "", "yes", "1e3", "~"]))
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)


def near(key: str) -> st.SearchStrategy:
    """Values at and just past the edges of what ``key`` allows, of the right and wrong type."""
    hint, meta = KEYS[key]
    edges = [v for v in (meta.get("low"), meta.get("high"), meta.get("below")) if v is not None]
    options = [st.just(DEFAULTS[key])]
    for edge in edges:
        options.append(st.sampled_from([edge, edge - 1, edge + 1, edge * 1.5, str(edge)]))
    if meta.get("choices"):
        choices = list(meta["choices"])
        options.append(st.sampled_from(choices + [str(c).upper() + " " for c in choices]))
    if hint is list:
        options.append(st.lists(st.floats(-1, 2) | st.integers(-1, 2), max_size=4))
    return st.one_of(options)


@st.composite
def edited_document(draw) -> dict:
    """The default params with 1-4 random edits: set, delete, drop a group, junk, unknown keys."""
    doc = {g: dict(body) for g, body in BASE.items()}
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "set", "set", "delete", "drop_group", "junk_group",
                                       "unknown"]))
        group = draw(st.sampled_from(GROUPS))
        if action == "junk_group":
            doc[group] = draw(JUNK)
        elif action == "drop_group":
            doc.pop(group, None)
        elif action == "unknown":
            name = draw(st.text(min_size=1, max_size=10)
                        .filter(lambda n, taken=FIELDS[group]: n not in taken))
            target = doc if draw(st.booleans()) else doc.setdefault(group, {})
            if isinstance(target, dict):
                target[name] = draw(JUNK)
        else:
            key = draw(st.sampled_from(sorted(FIELDS[group])))
            body = doc[group] if isinstance(doc.get(group), dict) else doc.setdefault(group, {})
            if not isinstance(body, dict):
                doc[group] = body = {}
            if action == "delete":
                body.pop(key, None)
            else:
                body[key] = draw(st.one_of(near(f"{group}.{key}"), JUNK))
    return doc


# -- in-process fuzz ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "params.yaml"


@FUZZ
@given(doc=edited_document())
def test_random_edits_are_accepted_exactly_when_valid(scratch, doc):
    # libyaml for the test's own dump and load: load_params parses in pure Python, slowly enough.
    scratch.write_text(yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=True), encoding="utf-8")
    loaded = yaml.load(scratch.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    bad, judged = problems(loaded, str(scratch))
    result = check_load(scratch)
    if isinstance(result, UserError):
        assert bad or not judged, f"valid document refused: {result}"
        assert any(name in str(result) for name in bad) or not judged, (str(result), bad)
        return
    assert not bad, f"accepted despite {bad}"
    values = flatten(result)
    for group, body in (loaded or {}).items():
        for key, value in body.items():
            assert values[f"{group}.{key}"] == value, f"{group}.{key}"


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200)
       | st.lists(st.sampled_from(["train:", "  lr: 0.1", "\tlr: 1", "- x", "{", "]", "&a", "*a",
                                   "!!python/object:os.system", "? [a]", ": b", "---", "%YAML 9",
                                   "data: {path: [", "'", '"\\x', "\x00", "\ufeff"]), max_size=8)
       .map("\n".join))
def test_any_text_gives_params_or_an_error_naming_the_file(scratch, text):
    scratch.write_bytes(text.encode() if isinstance(text, str) else text)
    check_load(scratch)


def deep_nesting() -> bytes:
    return b"data:\n  path: " + b"[" * 600 + b"]" * 600 + b"\n"


def alias_bomb() -> bytes:
    """421 bytes of YAML whose anchors expand to a million strings: the error must stay short."""
    levels = ["&l0 [" + ", ".join(["xxxxxxxxxx"] * 10) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)]
    return ("data:\n  path: [" + ", ".join(levels) + "]\n").encode()


@pytest.mark.parametrize("content, names", [
    (b"# caf\xe9 (Latin-1)\ntrain:\n  lr: 0.1\n", "UTF-8"),
    ("train:\n  lr: 0.1\n".encode("utf-16"), "UTF-8"),
    (deep_nesting(), ""),
    (b"train:\n  lr: " + b"9" * 400 + b"\n", "train.lr"),
    (b"train:\n  betas: [" + b"9" * 400 + b", 0.9]\n", "train.betas[0]"),
    (alias_bomb(), "data.path"),
    (None, ""),
], ids=["not_utf8", "utf16", "deep_nesting", "huge_int", "huge_int_in_list", "alias_bomb",
        "a_folder"])
def test_hostile_files(tmp_path, content, names):
    path = tmp_path / "params.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = check_load(path)
    assert isinstance(result, UserError) and names in str(result)


# -- through the real stage scripts ------------------------------------------------------------

@st.composite
def broken_key(draw) -> tuple[str, object]:
    """A dotted key and a short value the oracle refuses, or an unknown key."""
    key = draw(st.sampled_from(sorted(KEYS)))
    if draw(st.booleans()):
        return key + "_typo", 1
    value = draw(st.one_of(near(key), st.sampled_from(["fast", -1, 3.5, [1], {"a": 1}, None])))
    hint, meta = KEYS[key]
    if acceptable(hint, meta, value) is not False:
        value = {"nested": ["junk"]}
    return key, value


@settings(max_examples=4, deadline=None, derandomize=True, database=None)
@given(case=broken_key(), stage=st.sampled_from(["fetch", "preprocess"]))
def test_stage_exits_2_with_one_error_line_naming_the_key(case, stage):
    key, value = case
    group, name = key.split(".", 1)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "params.yaml").write_text(yaml.safe_dump({group: {name: value}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project,
                              capture_output=True, text=True, timeout=120,
                              env={**env, "DVC_ROOT": str(project)})
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: params.yaml: "), proc.stderr
        assert key in lines[0]
        assert sorted(os.listdir(project)) == ["params.yaml"]
