"""The Python half of gpu_check.sh: mixed precision / compile checks, timed epochs, one summary table.

  header  the code's provenance, torch, CUDA and the device, printed and in provenance.json;
          exits 2 without CUDA (--device cuda)
  check   every config trains a few steps from the same seed; losses must be finite and close to fp32
  epochs  3 epochs per variant and precision; seconds per epoch from a tracker's timestamps
  summary one markdown table from the JSON files the parts wrote in the output folder

Each part writes its JSON after every config, so a part stopped by its time limit keeps what it did.
"""
from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from benchmarks.train_throughput import REFERENCE
from catgan.config import VARIANTS, Params, parse_params
from catgan.data.preprocess import load_images, preprocess
from catgan.errors import cli_entry
from catgan.study import provenance
from catgan.tracking.client import NullTracker
from catgan.training.loop import train

FULL_SET = 9303  # distinct images in the full Kaggle set: what one real epoch trains on
# Same seed, weights and batches: only rounding differs, so early steps must agree closely.
FIRST_STEP_RTOL = 0.05
MEAN_RTOL = 0.15


class EpochClock(NullTracker):
    """A tracker that only notes when training starts and when each epoch's metrics arrive."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def start(self, params: dict, tags: dict, run_id: str | None = None) -> None:
        self.stamps.append(time.perf_counter())

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.stamps.append(time.perf_counter())


def load_data(data: Path | None, tmp: Path) -> tuple[np.ndarray, str]:
    root, description = common.prepare_images(data, tmp)
    preprocess(root, tmp / "prepared", image_size=64, min_size=32, dedup=True, max_bad_fraction=0.05,
               workers=0)
    return np.asarray(load_images(tmp / "prepared" / "images.npy")), description


def params_for(variant: str, config: str, device: str, quality_check: bool = True,
               **train) -> Params:
    precision, *flags = config.split("+")
    return parse_params({
        "model": {"variant": variant},
        "train": {"device": device, "precision": precision, "channels_last": "cl" in flags,
                  "compile": "compile" in flags, **train},
        "eval": {"every": int(quality_check)},
        "tracking": {"enabled": False},
    })


def check(args, images: np.ndarray, out: Path) -> None:
    rows: list[dict] = []
    reference: dict[str, np.ndarray] = {}
    # Config by config, so a time limit hit while compiling still leaves every cheaper result.
    for config in args.configs:
        for variant in VARIANTS:
            # No quality check: the losses are what is compared, and under compile the check's
            # eval-mode passes would each cost a graph of their own.
            params = params_for(variant, config, args.device, quality_check=False, epochs=1,
                                steps_per_epoch=args.steps, batch_size=args.batch_size, log_every=1)
            with tempfile.TemporaryDirectory() as ckpt:
                start = time.perf_counter()
                result = train(params, images, "gpu-check", Path(ckpt))
                seconds = time.perf_counter() - start
            losses = np.array([[row["loss_d"], row["loss_g"]] for row in result.steps])
            ref = reference.setdefault(variant, losses)
            first = np.abs(losses[0] - ref[0]) / np.abs(ref[0])
            mean = np.abs(losses.mean(0) - ref.mean(0)) / np.abs(ref.mean(0))
            finite = bool(np.isfinite(losses).all())
            rows.append({"variant": variant, "config": config, "seconds": seconds, "finite": finite,
                         "first_step_rel_diff": float(first.max()), "mean_rel_diff": float(mean.max()),
                         "ok": finite and first.max() <= FIRST_STEP_RTOL and mean.max() <= MEAN_RTOL,
                         "losses": losses.tolist()})
            common.write_json(out / "check.json", {"rows": rows, "steps": args.steps,
                                                   "batch_size": args.batch_size})
            print(f"check {variant} {config}: finite {finite}, first step {first.max():.2%}, "
                  f"mean {mean.max():.2%} from {args.configs[0]} ({seconds:.1f} s)", flush=True)


def epochs(args, images: np.ndarray, out: Path) -> None:
    count = args.epoch_images or FULL_SET
    data = np.ascontiguousarray(np.resize(images, (count, *images.shape[1:])))
    rows: list[dict] = []
    for variant in VARIANTS:
        for config in args.configs:
            params = params_for(variant, config, args.device, epochs=3, batch_size=args.batch_size)
            clock = EpochClock()
            with tempfile.TemporaryDirectory() as ckpt:
                train(params, data, "gpu-check", Path(ckpt), tracker=clock)
            per_epoch = np.diff(clock.stamps).tolist()
            rows.append({"variant": variant, "config": config, "images_per_epoch": count,
                         "seconds_per_epoch": per_epoch})
            common.write_json(out / "epochs.json", {"rows": rows})
            print(f"epochs {variant} {config}: " + ", ".join(f"{s:.2f}" for s in per_epoch) + " s",
                  flush=True)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def throughput_cells(part: str, measured: dict) -> list[list]:
    machine = measured.get("machine", {})
    batch = machine.get("batch_size")
    on_gpu = not str(machine.get("device", "cpu")).startswith("cpu")
    # The targets: baseline at batch 128, bf16 on one H100, fp32 on the CPU.
    target_loop, need = ("catgan bf16", 10.0) if on_gpu else ("catgan fp32", 1.3)
    firsts: dict[str, str] = {}
    cells = []
    for row in measured.get("rows", []):
        first = firsts.setdefault(row["variant"], row["loop"])  # the ratios' base comes first
        speed, ratio = row["img_s"], row["vs_first"]
        target = ""
        if first == REFERENCE and (row["variant"], row["loop"], batch) == ("baseline", target_loop,
                                                                          128):
            target = f"{'PASS' if ratio >= need else 'FAIL'} (>= {need:g}x ref)"
            if on_gpu:
                target += f"; {'PASS' if speed >= 15000 else 'FAIL'} (>= 15,000 img/s)"
        base = "ref" if first == REFERENCE else first.removeprefix("catgan ")
        cells.append([part, row["variant"], row["loop"],
                      f"{measured['steps']} steps x {batch} after {measured['warmup']}",
                      f"{speed:,.0f} img/s, {ratio:.2f}x {base}, {row['tflops']:.3g} TFLOP/s = "
                      f"{100 * row['peak_fraction']:.2g}% of {measured['peak_tflops']:g}", target])
    return cells


def summary(out: Path) -> str:
    cells = []
    checked = _read(out / "check.json")
    for row in checked.get("rows", []):
        verdict = "PASS" if row["ok"] else "FAIL"
        cells.append(["a: vs fp32", row["variant"], row["config"],
                      f"{checked['steps']} steps x {checked['batch_size']}",
                      f"finite {row['finite']}, step 1 {row['first_step_rel_diff']:.2%}, "
                      f"mean {row['mean_rel_diff']:.2%}",
                      f"{verdict} (<= {FIRST_STEP_RTOL:.0%} / {MEAN_RTOL:.0%})"])
    cells += throughput_cells("b: throughput", _read(out / "throughput.json"))
    for row in _read(out / "epochs.json").get("rows", []):
        per = row["seconds_per_epoch"]
        later = per[1:] or per
        cells.append(["c: 3 epochs", row["variant"], row["config"],
                      f"{row['images_per_epoch']:,} images/epoch",
                      "s/epoch " + ", ".join(f"{s:.2f}" for s in per),
                      f"{row['images_per_epoch'] / (sum(later) / len(later)):,.0f} img/s after epoch 1"])
    cells += throughput_cells("d: compile", _read(out / "compile.json"))
    if not cells:
        return "no results (every part failed or timed out; see the log above)"
    return common.markdown_table(["Part", "Variant", "Config", "Work", "Measured", "Target"], cells)


def header(args) -> None:
    """Which code ran on what, printed before any part so that a log cut short still says it."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        raise SystemExit(2)
    # This project's commit, or the content hash of its code where the copy has no .git of its own
    # (git rev-parse there named an enclosing repository's commit); torch, CUDA and the device.
    record = provenance.record(shlex.split(args.command), torch.device(args.device))
    common.write_json(args.out / "provenance.json", record)
    print(f"== {provenance.line(record)}\n== results in {args.out}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("header", "check", "epochs", "summary"))
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON results")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--configs", default="fp32,bf16,fp32+cl,bf16+cl,bf16+compile",
                        help="the first is the reference the others are compared with")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epoch-images", type=int, default=0,
                        help=f"images per epoch, cycling over the data (default {FULL_SET})")
    parser.add_argument("--data", type=Path, default=common.default_data())
    parser.add_argument("--command", default="benchmarks/gpu_check.sh",
                        help="the command line the header records")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    return args


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.part == "summary":
        print(summary(args.out))
        return
    if args.part == "header":
        header(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        images, description = load_data(args.data, Path(tmp))
        print(f"{args.part} on {common.device_name(args.device)}, data: {description}", flush=True)
        (check if args.part == "check" else epochs)(args, images, args.out)


if __name__ == "__main__":
    main()
