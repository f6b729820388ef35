"""The training loop: finite metrics, determinism, exact resume, refusal of foreign checkpoints."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from catgan.model.losses import GAN_LOSSES
from catgan.training import checkpoint
import catgan.training.loop as train_mod
from catgan.training.loop import COLUMNS, HISTORY_COLUMNS, TrainingDiverged, train
from catgan.training.state import new_state
from catgan.training.step import gan_step
from catgan.training.monitor import QUALITY
from catgan.training.outputs import write_train_outputs


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_run_records_finite_values_and_grids(tiny_params, tiny_images, tmp_path):
    result = train(tiny_params(), tiny_images, "data", tmp_path)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert len(result.steps) == 4  # 2 epochs x steps_per_epoch 2, log_every 1
    for row in result.history + result.steps:
        assert all(math.isfinite(row[c]) for c in COLUMNS), row
        assert 0 < row["real_score"] < 1 and 0 < row["fake_score"] < 1
    grids = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert grids == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 2


def test_epoch_means_average_every_step(tiny_params, tiny_images, tmp_path):
    result = train(tiny_params(train={"epochs": 1, "steps_per_epoch": 3}), tiny_images, "d", tmp_path)
    for col in COLUMNS:
        mean = sum(row[col] for row in result.steps) / 3
        assert result.history[0][col] == pytest.approx(mean, rel=1e-5)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_same_seed_same_weights_bit_for_bit(tiny_params, tiny_images, tmp_path):
    a = train(tiny_params(), tiny_images, "d", tmp_path / "a")
    b = train(tiny_params(), tiny_images, "d", tmp_path / "b")
    assert same_weights(a.generator, b.generator) and same_weights(a.discriminator, b.discriminator)
    assert a.history == b.history
    c = train(tiny_params(train={"seed": 1}), tiny_images, "d", tmp_path / "c")
    assert not same_weights(a.generator, c.generator)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_resume_equals_uninterrupted_run(tiny_params, tiny_images, tmp_path):
    full = train(tiny_params(train={"epochs": 3}), tiny_images, "d", tmp_path / "full")
    train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path / "cut")
    resumed = train(tiny_params(train={"epochs": 3}), tiny_images, "d", tmp_path / "cut")
    assert resumed.resumed_from == 1
    assert same_weights(full.generator, resumed.generator)
    assert same_weights(full.discriminator, resumed.discriminator)
    assert full.history == resumed.history and full.steps == resumed.steps


def by_hand(params, images):
    """The loop's training state, and what a step written out by hand needs to follow it: copies
    of G and D with their own Adams, the state's noise generator in its state, 4 reals, the z
    shape."""
    from catgan.training.distributed import Dist

    state = new_state(params, torch.device("cpu"), Dist())
    G, D = copy.deepcopy(state.G), copy.deepcopy(state.D)
    adam = {"lr": params.train.lr, "betas": tuple(params.train.betas)}
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    noise = torch.Generator().set_state(state.noise.get_state())
    real = torch.from_numpy(images[:4]).float() / 127.5 - 1
    return state, G, D, opt_g, opt_d, noise, real, (4, params.model.latent_dim, 1, 1)


def test_step_equals_the_course_step_bit_for_bit(tiny_params, tiny_images):
    """The step skips G's graph for D's fakes and D's weight gradients in G's step; the course's
    step computes both and throws them away. The weights must not notice."""
    from catgan.model.losses import d_loss, g_loss

    params = tiny_params(train={"channels_last": False})
    state, G, D, opt_g, opt_d, noise, real, latent = by_hand(params, tiny_images)
    for _ in range(3):
        gan_step(state, real, params)
        loss_d = d_loss(D(real), D(G(torch.randn(latent, generator=noise)).detach()))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss(D(G(torch.randn(latent, generator=noise))), "non_saturating")
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    assert same_weights(state.G, G) and same_weights(state.D, D)
    assert all(p.requires_grad for p in state.D.parameters())


@pytest.mark.parametrize("loss", ["non_saturating", "saturating", "ralsgan"])
def test_recipe_step_equals_a_step_written_out_by_hand(tiny_params, tiny_images, loss):
    """DiffAugment on every batch D sees, the loss for D and G (a relativistic G's judged against
    the reals as D sees them after its step), spectral norm in D, then the average moves."""
    from catgan.model.augment import augment
    from catgan.model.losses import d_loss, g_loss, relativistic

    params = recipe(tiny_params, train={"channels_last": False, "loss": loss})
    policy = params.train.augment
    state, G, D, opt_g, opt_d, noise, real, latent = by_hand(params, tiny_images)
    ema = copy.deepcopy(state.G)
    course = loss in ("non_saturating", "saturating")
    for n in range(3):
        gan_step(state, real, params)
        z = torch.randn(latent, generator=noise)
        real_logits = D(augment(real, policy, noise))
        fake_logits = D(augment(G(z).detach(), policy, noise))
        loss_d = (d_loss(real_logits, fake_logits) if course
                  else relativistic(real_logits, fake_logits, loss))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        z = torch.randn(latent, generator=noise)
        if course:
            loss_g = g_loss(D(augment(G(z), policy, noise)), loss)
        else:
            real_logits = D(augment(real, policy, noise)).detach()
            loss_g = relativistic(D(augment(G(z), policy, noise)), real_logits, loss)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        decay = min(0.9, (1 + n) / (10 + n))
        with torch.no_grad():
            for mine, now in zip([*ema.parameters(), *ema.buffers()], [*G.parameters(), *G.buffers()]):
                if mine.is_floating_point():
                    mine.copy_(decay * mine + (1 - decay) * now)
    assert same_weights(state.G, G) and same_weights(state.D, D)
    averaged, expected = state.ema.module.state_dict(), ema.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(averaged[key], value)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_checkpoint_from_other_params_is_not_resumed(tiny_params, tiny_images, tmp_path, caplog):
    train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path)
    other = train(tiny_params(train={"epochs": 2, "lr": 0.001}), tiny_images, "d", tmp_path)
    assert other.resumed_from == 0
    assert "made with other params" in caplog.text
    fresh = train(tiny_params(train={"epochs": 2, "lr": 0.001}), tiny_images, "d", tmp_path / "f")
    assert same_weights(other.generator, fresh.generator)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_quality_is_measured_every_n_epochs_seeded_and_written_blank_between(
        tiny_params, tiny_images, tmp_path):
    params = tiny_params(train={"epochs": 3}, eval={"every": 2})
    a = train(params, tiny_images, "d", tmp_path / "a")
    measured = [row["epoch"] for row in a.history if "swd_avg" in row]
    assert measured == [2]
    row = a.history[1]
    assert set(QUALITY) <= row.keys() and all(math.isfinite(row[k]) for k in QUALITY)
    assert row["swd_avg"] > 0 and 0 < row["fixed_real_score"] < 1
    b = train(params, tiny_images, "d", tmp_path / "b")
    assert [r.get("swd_avg") for r in a.history] == [r.get("swd_avg") for r in b.history]
    write_train_outputs(a, tmp_path / "a" / "grids", models=tmp_path / "m",
                        metrics=tmp_path / "metrics", samples=tmp_path / "s", variant="fused",
                        latent_dim=128, seed=0)
    lines = (tmp_path / "metrics" / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == list(HISTORY_COLUMNS)
    cells = [line.split(",")[HISTORY_COLUMNS.index("swd_avg")] for line in lines[1:]]
    assert cells[0] == cells[2] == "" and float(cells[1]) == row["swd_avg"]


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_quality_checks_do_not_change_the_trajectory(tiny_params, tiny_images, tmp_path):
    checked = train(tiny_params(eval={"every": 1}), tiny_images, "d", tmp_path / "a")
    unchecked = train(tiny_params(eval={"every": 0}), tiny_images, "d", tmp_path / "b")
    assert all("swd_avg" in row for row in checked.history)
    assert not any("swd_avg" in row for row in unchecked.history)
    assert same_weights(checked.generator, unchecked.generator)
    assert same_weights(checked.discriminator, unchecked.discriminator)
    assert checked.steps == unchecked.steps


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_sample_grids_do_not_change_the_trajectory(tiny_params, tiny_images, tmp_path, monkeypatch):
    with_grids = train(tiny_params(), tiny_images, "d", tmp_path / "a")
    monkeypatch.setattr(train_mod._Run, "save_grid", lambda *args: None)
    without = train(tiny_params(), tiny_images, "d", tmp_path / "b")
    assert same_weights(with_grids.generator, without.generator)
    assert same_weights(with_grids.discriminator, without.discriminator)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(
        tiny_params, tiny_images, tmp_path, monkeypatch):
    train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    course = GAN_LOSSES["non_saturating"]
    calls = iter(range(100))

    def poisoned(real_logits, fake_logits):
        loss = course.d(real_logits, fake_logits)
        return loss * float("nan") if next(calls) == 1 else loss

    monkeypatch.setitem(GAN_LOSSES, "non_saturating", course._replace(d=poisoned))
    with pytest.raises(TrainingDiverged, match=r"loss_d became nan at epoch 2, step 2"):
        train(tiny_params(train={"epochs": 2}), tiny_images, "d", tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_checkpoint_loads_with_weights_only(tiny_params, tiny_images, tmp_path):
    train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"G", "D", "opt_g", "opt_d", "rng", "fixed_z", "history", "train_hash"} <= state.keys()
    assert state["fixed_z"].shape == (64, 128, 1, 1)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_channels_last_trains_deterministically_and_close_to_default_layout(
        tiny_params, tiny_images, tmp_path):
    params = tiny_params(train={"channels_last": True, "epochs": 1})
    a = train(params, tiny_images, "d", tmp_path / "a")
    b = train(params, tiny_images, "d", tmp_path / "b")
    assert same_weights(a.generator, b.generator)
    plain = train(tiny_params(train={"channels_last": False, "epochs": 1}), tiny_images, "d",
                  tmp_path / "c")
    for col in COLUMNS:
        assert a.history[0][col] == pytest.approx(plain.history[0][col], rel=1e-3, abs=1e-4)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_bf16_autocast_gives_finite_losses_close_to_fp32(tiny_params, tiny_images, tmp_path):
    settings = {"epochs": 1, "steps_per_epoch": 2}
    fp32 = train(tiny_params(train=settings), tiny_images, "d", tmp_path / "fp32")
    bf16 = train(tiny_params(train={**settings, "precision": "bf16"}), tiny_images, "d",
                 tmp_path / "bf16")
    first32, first16 = fp32.steps[0], bf16.steps[0]  # same weights and batch: only rounding differs
    for col in ("loss_d", "loss_g", "real_score", "fake_score"):
        assert math.isfinite(first16[col])
        assert first16[col] == pytest.approx(first32[col], rel=0.05, abs=0.02), col
    assert first16 != first32, "bf16 made no difference: autocast is not in effect"


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_step_log_follows_the_global_step_count(tiny_params, tiny_images, tmp_path):
    result = train(tiny_params(train={"epochs": 3, "steps_per_epoch": 2, "log_every": 3}),
                   tiny_images, "d", tmp_path)
    assert [row["step"] for row in result.steps] == [3, 6]
    assert [row["epoch"] for row in result.steps] == [2, 3]


def test_precision_and_process_count_get_their_own_checkpoint_folder(tiny_params, tmp_path):
    base, bf16, nproc, log_every = (train_mod.checkpoint_dir(tmp_path, tiny_params(train=t), "d")
                                    for t in ({}, {"precision": "bf16"}, {"nproc": 2},
                                              {"log_every": 5}))
    assert log_every == base, "log_every does not change the trajectory, so it shares the folder"
    assert len({base, bf16, nproc}) == 3, "bf16 and nproc=2 train differently from the default"


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_training_runs_with_torch_numpy_and_pillow_only(tmp_path):
    """benchmarks/gpu_check.sh runs on machines that have nothing else installed."""
    import subprocess
    import sys

    script = f"""
import sys
for name in ("yaml", "tqdm", "mlflow", "dvc", "kaggle", "scipy", "matplotlib", "imageio"):
    sys.modules[name] = None  # an import of any of them now fails
import numpy as np
from pathlib import Path
from catgan.config import parse_params
from catgan.data.preprocess import preprocess
from catgan.data.synthetic import write_synthetic
from catgan.training.loop import train
params = parse_params({{"train": {{"epochs": 1, "batch_size": 4, "steps_per_epoch": 1, "threads": 1}},
                       "tracking": {{"enabled": False}}}})
root = Path({str(tmp_path)!r})
(root / "raw").mkdir()
write_synthetic(root / "raw", 8, 0)
preprocess(root / "raw", root / "prepared", image_size=64, min_size=32, dedup=True,
           max_bad_fraction=0.0, workers=1)
images = np.load(root / "prepared" / "images.npy")
print(train(params, images, "x", root / "ckpt").history[0]["epoch"])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_the_checkpoint_key_hashes_the_code_that_shapes_training_and_not_what_logs_it():
    code = train_mod.trajectory_code()
    assert {"catgan/training/loop.py", "catgan/training/step.py", "catgan/training/state.py",
            "catgan/model/nets.py", "catgan/model/losses.py", "catgan/training/seeding.py"} <= set(code)
    assert not {"catgan/tracking/client.py", "catgan/progress.py", "catgan/training/monitor.py"} & set(code)
    assert not any(name.startswith(("catgan/metrics/", "stages/")) for name in code)


# Every technique beyond the course at once: train.ema, train.augment, train.loss, spectral norm.
RECIPE = {"model": {"d_norm": "spectral"},
          "train": {"ema": 0.9, "augment": "color,translation,cutout", "loss": "rasgan"}}
OFF = {"model": {"d_norm": "batchnorm"}, "train": {"ema": 0, "augment": "", "augment_p": 1, "r1": 0,
                                                   "r2": 0, "loss": "non_saturating"}}
# The candidates added since: R3GAN's loss, penalties and bare D, with ADA's adaptive augmentation.
R3_ADA = {"model": {"d_norm": "none"},
          "train": {"loss": "rpgan", "r1": 0.5, "r2": 0.5, "betas": [0.0, 0.99],
                    "augment": "color,translation,cutout", "augment_p": "auto"}}


def recipe(tiny_params, **groups):
    from conftest import merge

    return tiny_params(**merge(RECIPE, groups))


@pytest.mark.slow  # over 3.5 s: the quick loop stays under 3 min
def test_the_recipe_keys_off_change_nothing_and_run_none_of_its_code(
        tiny_params, tiny_images, tmp_path, monkeypatch):
    import catgan.model.losses
    import catgan.model.nets
    import catgan.training.state
    import catgan.training.step

    default = train(tiny_params(train={"epochs": 1}), tiny_images, "d", tmp_path / "a")

    def refuse(*args, **kwargs):
        raise AssertionError("code beyond the course ran with every recipe key off")

    for module, name in ((catgan.training.state, "GeneratorEMA"), (catgan.training.step, "augment"),
                         (catgan.training.state, "AugmentP"), (catgan.model.losses, "relativistic"),
                         (catgan.model.losses, "paired"), (catgan.training.step, "gradient_penalty"),
                         (catgan.model.nets, "spectrally_normed"),
                         (catgan.model.nets, "without_batchnorm")):
        monkeypatch.setattr(module, name, refuse)
    off = train(tiny_params(model=OFF["model"], train={**OFF["train"], "epochs": 1}), tiny_images,
                "d", tmp_path / "b")
    assert same_weights(default.generator, off.generator)
    assert same_weights(default.discriminator, off.discriminator)
    assert default.history == off.history and default.steps == off.steps
    saved = checkpoint.load(tmp_path / "b" / "last.pt")
    assert "G_ema" not in saved and "augment_p" not in saved
    assert {row["augment_p"] for row in off.steps} == {0.0}


@pytest.mark.slow  # six short runs; the step test above shows each key at work in the quick loop
def test_each_recipe_key_changes_the_run_and_keeps_it_finite(tiny_params, tiny_images, tmp_path):
    from conftest import merge

    settings = {"train": {"epochs": 1, "steps_per_epoch": 1}, "eval": {"every": 0}}
    plain = train(tiny_params(**settings), tiny_images, "d", tmp_path / "plain")
    for name, groups in {"ema": {"train": {"ema": 0.9}}, "augment": {"train": {"augment": "cutout"}},
                         "rasgan": {"train": {"loss": "rasgan"}},
                         "ralsgan": {"train": {"loss": "ralsgan"}},
                         "spectral_norm": {"model": {"d_norm": "spectral"}},
                         "no_d_norm": {"model": {"d_norm": "none"}},
                         "augment_p": {"train": {"augment": "cutout", "augment_p": 0.5}},
                         "rpgan": {"train": {"loss": "rpgan"}}, "r1": {"train": {"r1": 1.0}},
                         "r2": {"train": {"r2": 1.0}}}.items():
        changed = train(tiny_params(**merge(settings, groups)), tiny_images, "d", tmp_path / name)
        assert not same_weights(plain.generator, changed.generator), name
        for row in changed.steps:
            assert all(math.isfinite(row[c]) for c in COLUMNS), (name, row)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_resume_with_the_recipe_on_equals_uninterrupted_run(tiny_params, tiny_images, tmp_path):
    quiet = {"every": 0}  # the checks are shown not to matter below
    full = train(recipe(tiny_params, eval=quiet), tiny_images, "d", tmp_path / "full")
    train(recipe(tiny_params, train={"epochs": 1}, eval=quiet), tiny_images, "d", tmp_path / "cut")
    resumed = train(recipe(tiny_params, eval=quiet), tiny_images, "d", tmp_path / "cut")
    assert resumed.resumed_from == 1
    assert same_weights(full.generator, resumed.generator)
    assert same_weights(full.discriminator, resumed.discriminator)
    assert full.history == resumed.history and full.steps == resumed.steps
    a, b = (checkpoint.load(tmp_path / name / "last.pt") for name in ("full", "cut"))
    for key in ("G", "G_ema", "D"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert int(a["G_ema"]["n_averaged"]) == 2 * 2  # one update per step


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_resume_with_r3_and_adaptive_augmentation_equals_uninterrupted_run(
        tiny_params, tiny_images, tmp_path):
    """ADA's p and its half-counted interval (4 steps, here across an epoch's end) are checkpointed."""
    from conftest import merge

    def params(**train):
        return tiny_params(**merge(R3_ADA, {"train": {"epochs": 3, **train}, "eval": {"every": 0}}))

    full = train(params(), tiny_images, "d", tmp_path / "full")
    train(params(epochs=1), tiny_images, "d", tmp_path / "cut")
    resumed = train(params(), tiny_images, "d", tmp_path / "cut")
    assert resumed.resumed_from == 1 and full.history == resumed.history and full.steps == resumed.steps
    assert same_weights(full.generator, resumed.generator)
    assert same_weights(full.discriminator, resumed.discriminator)
    a, b = (checkpoint.load(tmp_path / name / "last.pt")["augment_p"] for name in ("full", "cut"))
    assert a["seen"] == b["seen"] and torch.equal(a["p"], b["p"]) and torch.equal(a["signs"], b["signs"])
    assert len({row["augment_p"] for row in full.steps}) > 1  # p moved


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_with_ema_the_average_is_what_grids_checks_and_saved_models_show(
        tiny_params, tiny_images, tmp_path):
    import numpy as np
    from PIL import Image

    from catgan.images import grid_image
    from catgan.model.nets import sample
    from catgan.training.monitor import Monitor

    params = recipe(tiny_params)
    result = train(params, tiny_images, "d", tmp_path)
    state = checkpoint.load(tmp_path / "last.pt")
    ema = {k.removeprefix("module."): v for k, v in state["G_ema"].items() if k != "n_averaged"}
    shown = result.generator.state_dict()
    assert shown.keys() == ema.keys() and all(torch.equal(shown[k], ema[k]) for k in shown)
    assert not all(torch.equal(state["G"][k], shown[k]) for k in shown)  # the raw G differs

    grid = np.asarray(Image.open(tmp_path / "grids" / "epoch_002.png"))
    assert np.array_equal(grid, np.asarray(grid_image(sample(result.generator, state["fixed_z"]))))
    e = params.eval
    monitor = Monitor(tiny_images, every=1, samples=e.monitor_samples, seed=e.seed,
                      latent_dim=params.model.latent_dim, batch_size=e.batch_size,
                      device=torch.device("cpu"))
    assert monitor.measure(result.generator, result.discriminator)["swd_avg"] == \
        result.history[-1]["swd_avg"]

    write_train_outputs(result, tmp_path / "grids", models=tmp_path / "m", metrics=tmp_path / "x",
                        samples=tmp_path / "s", variant="fused", latent_dim=128, seed=0)
    saved = torch.load(tmp_path / "m" / "generator.pt", weights_only=True)
    assert all(torch.equal(saved[k], ema[k]) for k in ema)


@pytest.mark.slow  # over 4 s: the quick loop stays under 3 min
def test_quality_checks_and_grids_do_not_change_the_recipes_trajectory(
        tiny_params, tiny_images, tmp_path, monkeypatch):
    """The checks run D in training mode, which moves spectral norm's vectors; the grids and checks
    sample the average, whose BatchNorm statistics a forward moves: both are put back."""
    one = {"steps_per_epoch": 1}
    checked = train(recipe(tiny_params, train=one, eval={"every": 1}), tiny_images, "d",
                    tmp_path / "a")
    monkeypatch.setattr(train_mod._Run, "save_grid", lambda *args: None)
    unchecked = train(recipe(tiny_params, train=one, eval={"every": 0}), tiny_images, "d",
                      tmp_path / "b")
    assert same_weights(checked.generator, unchecked.generator)
    assert same_weights(checked.discriminator, unchecked.discriminator)
    assert checked.steps == unchecked.steps


def test_each_recipe_key_gets_its_own_checkpoint_folder(tiny_params, tmp_path):
    settings = ({}, {"train": {"ema": 0.999}}, {"train": {"augment": "color"}},
                {"train": {"augment": "cutout"}}, {"train": {"loss": "rasgan"}},
                {"model": {"d_norm": "spectral"}}, {"model": {"d_norm": "none"}},
                {"train": {"augment": "color", "augment_p": "auto"}}, {"train": {"loss": "rpgan"}},
                {"train": {"r1": 0.1}}, {"train": {"r2": 0.1}})
    folders = {train_mod.checkpoint_dir(tmp_path, tiny_params(**s), "d") for s in settings}
    assert len(folders) == len(settings)
