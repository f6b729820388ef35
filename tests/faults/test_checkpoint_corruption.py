"""Truncated and bit-flipped checkpoints: caught by their checksum before torch.load, reported with
their path, never loaded; training goes on from prev.pt (or from scratch), bit for bit."""
from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import pytest
import torch
from stagerun import make_project, ok, run, run_side_by_side, same_state_dicts

from catgan.training import checkpoint

SEED = 11


def payload(epoch: int) -> dict:
    return {"epoch": epoch, "w": torch.arange(4000, dtype=torch.float32) * epoch, "history": [{"a": 0.5}]}


@pytest.fixture
def pair(tmp_path) -> Path:
    """A folder where save() wrote epoch 1 then epoch 2: last.pt holds 2, prev.pt holds 1."""
    path = tmp_path / "last.pt"
    checkpoint.save(path, payload(1))
    checkpoint.save(path, payload(2))
    return path


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_save_keeps_the_replaced_checkpoint_as_prev_and_both_open_with_plain_torch_load(pair):
    prev = pair.with_name("prev.pt")
    assert torch.load(pair, weights_only=True)["epoch"] == 2
    assert torch.load(prev, weights_only=True)["epoch"] == 1
    assert checkpoint.load(pair)["epoch"] == 2
    assert sorted(p.name for p in pair.parent.iterdir()) == ["last.pt", "prev.pt"]


def damages(size: int) -> list[tuple[str, int]]:
    """Seeded truncations and bit flips anywhere, plus the checksum's own bytes at the end."""
    rng = random.Random(SEED)
    cuts = [("truncate", n) for n in (0, 1, size // 2, size - 1, *rng.sample(range(size), 4))]
    flips = [("flip", n) for n in (0, size // 2, size - 1, size - 70, size - 80, size - 100,
                                   *rng.sample(range(size), 6))]
    return cuts + flips


def sealed_size() -> int:
    buf = io.BytesIO()
    torch.save(payload(2), buf)
    return len(checkpoint.seal(buf.getvalue()))


@pytest.mark.parametrize("kind, where", damages(sealed_size()))
def test_a_damaged_last_checkpoint_is_reported_and_prev_is_loaded(pair, kind, where, caplog):
    if kind == "truncate":
        pair.write_bytes(pair.read_bytes()[:where])
    else:
        flip_bit(pair, where, bit=where % 8)
    with caplog.at_level(logging.WARNING, logger="catgan.training.checkpoint"):
        state = checkpoint.load(pair)
    assert state["epoch"] == 1 and torch.equal(state["w"], payload(1)["w"])
    assert f"checkpoint {pair} is damaged" in caplog.text
    assert f"continuing from the previous checkpoint {pair.with_name('prev.pt')} (epoch 1)" in caplog.text


def test_a_flipped_bit_in_tensor_data_fools_torch_load_but_not_the_checksum(pair):
    flip_bit(pair, len(pair.read_bytes()) // 2, bit=3)  # inside the 16 kB tensor: torch.load cannot tell
    assert not torch.equal(torch.load(pair, weights_only=True)["w"], payload(2)["w"])
    with pytest.raises(checkpoint.Damaged, match="sha256 does not match"):
        checkpoint.unseal(pair.read_bytes())


def test_both_damaged_means_a_fresh_start_said_in_the_log(pair, caplog):
    prev = pair.with_name("prev.pt")
    pair.write_bytes(pair.read_bytes()[:100])
    flip_bit(prev, 200)
    with caplog.at_level(logging.WARNING, logger="catgan.training.checkpoint"):
        assert checkpoint.load(pair) is None
    assert f"checkpoint {pair} is damaged (no checksum" in caplog.text
    assert f"checkpoint {prev} is damaged (its sha256 does not match" in caplog.text
    assert f"no intact checkpoint left in {pair.parent}: training starts from scratch" in caplog.text


def test_a_file_without_checksum_is_not_loaded(tmp_path, caplog):
    path = tmp_path / "last.pt"
    torch.save(payload(3), path)  # a sound zip, but not one that save() sealed
    with caplog.at_level(logging.WARNING, logger="catgan.training.checkpoint"):
        assert checkpoint.load(path) is None
    assert "no checksum at its end" in caplog.text


def test_saving_after_a_damaged_last_keeps_the_good_prev(pair, caplog):
    prev = pair.with_name("prev.pt")
    flip_bit(pair, 10)
    assert checkpoint.load(pair)["epoch"] == 1
    checkpoint.save(pair, payload(2))  # the run went on from prev.pt and wrote epoch 2 again
    assert checkpoint.load(pair)["epoch"] == 2
    assert torch.load(prev, weights_only=True)["epoch"] == 1  # not the damaged file
    assert f"not keeping the damaged {pair}" in caplog.text
    checkpoint.save(pair, payload(3))
    assert torch.load(prev, weights_only=True)["epoch"] == 2


def test_no_checkpoint_is_no_checkpoint_silently(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load(tmp_path / "last.pt") is None
    assert caplog.text == ""


@pytest.mark.slow  # three training runs: out of the quick loop
def test_train_stage_resumes_from_prev_after_a_bit_flip_and_ends_bit_for_bit(tiny_data,
                                                                             tmp_path):
    """Epoch 3 of 4 is damaged on disk: the re-run goes on from epoch 2 and matches an unbroken run."""
    whole = make_project(tmp_path / "whole", {"train": {"epochs": 4}}, data=tiny_data)
    cut = make_project(tmp_path / "cut", {"train": {"epochs": 3}}, data=tiny_data)
    for done in run_side_by_side([(whole, "train"), (cut, "train")]):
        ok(done)
    last = next(cut.glob("checkpoints/*/last.pt"))
    flip_bit(last, last.stat().st_size // 2, bit=5)
    make_project(cut, {"train": {"epochs": 4}})
    log = ok(run(cut, "train")).stderr
    assert f"checkpoint {last} is damaged (its sha256 does not match" in log
    assert f"continuing from the previous checkpoint {last.with_name('prev.pt')} (epoch 2)" in log
    for name in ("generator.pt", "discriminator.pt"):
        assert same_state_dicts(whole / "models" / name, cut / "models" / name), name
    for name in ("history.csv", "steps.csv"):
        assert (cut / "metrics" / name).read_text() == (whole / "metrics" / name).read_text()
    assert checkpoint.load(last)["epoch"] == 4
