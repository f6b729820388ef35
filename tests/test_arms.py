"""The study arms (catgan/study/arms.py) and `catgan arm NAME`, the one command that runs one."""
from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from catgan import cli
from catgan.config import nested, parse_params
from catgan.errors import UserError
from catgan.study import arms
from catgan.study import run as study

MODERN_KEYS = {"train.ema", "train.augment", "train.loss", "model.d_norm"}


def test_an_unknown_arm_is_refused_in_one_line_naming_the_known_ones():
    with pytest.raises(UserError) as err:
        arms.get("moden")
    message = str(err.value)
    assert "\n" not in message and "unknown arm 'moden'" in message
    assert all(name in message for name in arms.ARMS)


def test_every_arm_passes_the_params_check_and_changes_what_it_names():
    for arm in arms.ARMS.values():
        arms.check(arm)
        params = parse_params(nested(arm.overrides))
        assert params.model.variant == arm.variant
    with pytest.raises(UserError, match="arm bad: .*train.loss"):
        arms.check(arms.Arm("bad", {"train.loss": "wgan"}))


def test_modern_is_the_course_baseline_plus_exactly_its_four_components():
    base, modern = arms.get("course-baseline").overrides, arms.get("modern").overrides
    assert {k for k in modern if modern[k] != base.get(k)} == MODERN_KEYS
    assert modern == {**base, "train.ema": 0.999, "train.augment": "color,translation,cutout",
                      "train.loss": "ralsgan", "model.d_norm": "spectral"}
    ablations = [a for a in arms.ARMS.values() if a.ablation]
    # one ablation per component, each the course baseline plus that one component
    assert sorted(k for a in ablations for k in a.overrides if k not in base) == sorted(MODERN_KEYS)
    assert all(len(a.overrides) == len(base) + 1 and a.variant == "baseline" for a in ablations)
    assert not any(arms.get(n).ablation for n in arms.DEFAULT)
    assert arms.label("ablate-ema") == "ablate-ema (ablation)" and arms.label("modern") == "modern"


@pytest.mark.parametrize("name", list(arms.ARMS))
def test_catgan_arm_prints_overrides_that_dvc_reads_as_one_run(capsys, name):
    cli.main(["arm", name])
    printed = capsys.readouterr().out.split()  # as the shell splits `$(catgan arm NAME)`
    assert printed[::2] == ["-S"] * len(arms.get(name).overrides)
    # DVC parses -S with Hydra: an unquoted a,b,c would be a sweep of three experiments
    parser = OverridesParser.create()
    parsed = {}
    for item in printed[1::2]:
        override = parser.parse_override(item)
        assert not override.is_sweep_override(), item
        parsed[override.key_or_group] = override.value()
    assert parsed == arms.get(name).overrides


def test_the_two_new_candidates_are_what_their_references_train():
    modern = arms.get("modern").overrides
    assert arms.get("modern-ada").overrides == {**modern, "train.augment_p": "auto"}
    r3 = parse_params(nested(arms.get("r3").overrides))
    assert (r3.model.variant, r3.model.d_norm, r3.train.loss, r3.train.betas) == (
        "baseline", "none", "rpgan", [0.0, 0.99])
    assert r3.train.r1 == r3.train.r2 == arms.R3_GAMMA > 0 and r3.train.ema == 0
    assert not any(arms.get(n).ablation or arms.get(n).course for n in ("modern-ada", "r3"))


def test_catgan_arm_refuses_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["arm", "postmodern"])
    assert exit_.value.code != 0
    assert "unknown arm 'postmodern'; known arms: course-baseline" in capsys.readouterr().err


def test_the_study_plans_each_arm_and_seed_and_refuses_what_an_arm_sets():
    args = study.parse_args(["--name", "s", "--seeds", "0", "1", "--saturating"])
    assert args.arms == list(arms.DEFAULT)
    runs = {r.name: r.overrides for r in study.plan(args)}
    assert list(runs) == ["s-course-baseline-s0", "s-course-baseline-s1", "s-course-fused-s0",
                          "s-course-fused-s1", "s-modern-s0", "s-modern-s1",
                          "s-saturating-course-baseline-s0"]
    assert runs["s-modern-s1"]["train.augment"] == "'color,translation,cutout'"
    modern = runs["s-modern-s1"]
    assert (modern["tracking.arm"], modern["train.seed"]) == ("modern", "1")
    assert runs["s-saturating-course-baseline-s0"]["train.loss"] == "saturating"
    assert study.parse_args(["--variants", "fused"]).arms == ["course-fused"]
    with pytest.raises(UserError, match="arm modern sets it"):
        study.plan(study.parse_args(["-S", "train.ema=0.99"]))
    study.plan(study.parse_args(["--arms", "course-baseline", "-S", "train.ema=0.99"]))
    with pytest.raises(UserError, match="known arms"):
        study.parse_args(["--arms", "nope"])
    with pytest.raises(UserError, match=r"-S train.g_loss: gone; G's loss is set by train.loss now"):
        study.plan(study.parse_args(["-S", "train.g_loss=saturating"]))


def test_the_course_arms_are_marked_as_such_not_by_their_names():
    course = [a for a in arms.ARMS.values() if a.course]
    assert [a.name for a in course] == ["course-baseline", "course-fused"]
    assert [arms.course_arm(v) for v in ("baseline", "fused")] == course
    assert all(a.overrides == {"model.variant": a.variant} for a in course)
    # A run from before arms (study formats 1 and 2) is its variant's course arm.
    assert arms.of_run({"variant": "fused"}) == "course-fused"
    assert arms.of_run({"variant": "fused", "arm": "modern"}) == "modern"
