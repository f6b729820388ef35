"""Training images/second: the course's loop against catgan.train, in one process, side by side.

Both loops train the same networks at the same batch size for the same number of steps on the
same images and device. The reference reads the JPEG files through ImageFolder; catgan reads
the uint8 array its preprocess stage makes from those files (made once, outside the timing).

Each call is timed whole: setup, ``--steps`` steps, the epoch's sample grid (catgan also writes
its checkpoint). On the CPU each step after a call's first is timed too, and the median step is
the steady state. On CUDA step ends are only launch times, so there (``--steady``) every call is
also run at a tenth of the steps and the difference gives the steady-state time per step. After
one untimed warm-up call each, runs alternate (ref, ours, ref, ours ...); tables show medians.

Run from the repo root:  python -m benchmarks.train_throughput [--device cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from benchmarks import common, reference_loop
from catgan.config import parse_params
from catgan.data.preprocess import load_images, preprocess
from catgan.errors import cli_entry
from catgan.train import train

REFERENCE = "reference (course)"


@dataclass(frozen=True)
class Config:
    """One way to run catgan's loop, spelled like "bf16+cl+compile"."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, spec: str) -> Config:
        precision, *flags = spec.strip().split("+")
        unknown = set(flags) - {"cl", "compile"}
        if precision not in ("fp32", "bf16") or unknown:
            raise argparse.ArgumentTypeError(
                f"config {spec!r}: expected fp32 or bf16, optionally followed by +cl and/or +compile")
        return cls(precision, "cl" in flags, "compile" in flags)

    @property
    def label(self) -> str:
        return "catgan " + "+".join([self.precision] + ["cl"] * self.channels_last
                                    + ["compile"] * self.compile)


@dataclass
class Timings:
    long: list[float] = field(default_factory=list)  # whole calls of --steps steps
    cpu: list[float] = field(default_factory=list)  # their CPU time, all processes
    short: list[float] = field(default_factory=list)  # whole calls of --steps/10 steps (--steady)
    steps: list[float] = field(default_factory=list)  # single steps after the first of each call


def cpu_seconds() -> float:
    """User + system time of this process and of its reaped children (the loader's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(device: torch.device, run) -> tuple[float, float, list[float]]:
    """Wall and CPU time of ``run()``, and the wall time of each of its steps but the first.

    Both loops end a training step with their second optimizer.step() (D's, then G's), so a
    global post-step hook marks step ends without touching either loop. On CUDA the marks are
    launch times, not completion times, hence the ``--steady`` differencing there. The loader's
    workers are joined when its iterator ends, so their CPU time is in by the time ``run`` returns.
    """
    marks: list[float] = []
    handle = register_optimizer_step_post_hook(lambda *_: marks.append(time.perf_counter()))
    try:
        sync(device)
        cpu, start = cpu_seconds(), time.perf_counter()
        run()
        sync(device)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    finally:
        handle.remove()
    return seconds, cpu, np.diff(marks[1::2]).tolist()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_reference(image_root: Path, variant: str, steps: int, *, batch: int, device: torch.device):
    # catgan.train turns cuDNN autotuning on for the process; the course leaves it off.
    torch.backends.cudnn.benchmark = False
    with tempfile.TemporaryDirectory() as out:
        return timed(device, lambda: reference_loop.fit(image_root, variant, batch, steps, device,
                                                        Path(out)))


def run_ours(images: np.ndarray, variant: str, steps: int, *, batch: int, device: torch.device,
             config: Config, threads: int):
    params = parse_params({
        "model": {"variant": variant},
        "train": {"epochs": 1, "steps_per_epoch": steps, "batch_size": batch, "device": device.type,
                  "threads": threads, "precision": config.precision,
                  "channels_last": config.channels_last, "compile": config.compile},
        "tracking": {"enabled": False},
    })
    with tempfile.TemporaryDirectory() as ckpt:  # fresh each time, or train() would resume
        return timed(device, lambda: train(params, images, "benchmark", Path(ckpt)))


def prepare(args, tmp: Path) -> tuple[Path, np.ndarray, str]:
    """(ImageFolder root, catgan's uint8 array, data description), each with >= steps x batch images."""
    root, description = common.prepare_images(args.data, tmp)
    files = common.image_files(root)
    needed = args.steps * args.batch_size
    image_root = common.link_images(files, tmp / "imagefolder", needed)
    manifest = preprocess(root, tmp / "prepared", image_size=64, min_size=32, dedup=True,
                          max_bad_fraction=0.05, workers=0)
    images = np.asarray(load_images(tmp / "prepared" / "images.npy"))
    # Both loops get one epoch at least as long as the run, so neither pays an extra epoch.
    images = np.ascontiguousarray(np.resize(images, (max(needed, len(images)), *images.shape[1:])))
    common.warm_page_cache(files)
    return image_root, images, f"{description}; catgan keeps {manifest['files_used']} after dedup"


def measure(args, image_root: Path, images: np.ndarray, device: torch.device) -> dict:
    def loops(batch: int) -> dict:
        """Loop name -> run(variant, steps), the reference first."""
        out = {REFERENCE: functools.partial(run_reference, image_root, batch=batch, device=device)}
        for config in args.configs:
            out[config.label] = functools.partial(run_ours, images, batch=batch, device=device,
                                                  config=config, threads=args.threads)
        return out

    # Untimed: first-call costs (imports, worker pools, kernels). cuDNN autotunes per shape, so
    # on CUDA this runs the real batch; a CPU step at batch 128 takes seconds, so a small one.
    warm_batch = args.batch_size if device.type == "cuda" else min(args.batch_size, 16)
    for variant in args.variants:
        for run in loops(warm_batch).values():
            run(variant, 1)
    timed_loops = loops(args.batch_size)
    lengths = (args.short_steps, args.steps) if args.steady else (args.steps,)
    timings = {(v, name): Timings() for v in args.variants for name in timed_loops}
    for _ in range(args.repeats):
        for variant in args.variants:
            for steps in lengths:
                for name, run in timed_loops.items():
                    t = timings[variant, name]
                    seconds, cpu, intervals = run(variant, steps)
                    if steps == args.steps:
                        t.long.append(seconds)
                        t.cpu.append(cpu)
                    else:
                        t.short.append(seconds)
                    t.steps += intervals
    return {"timings": timings, "loops": list(timed_loops)}


def table(args, result: dict, device: torch.device) -> tuple[str, list[dict]]:
    """Images/s per metric with its ratio to the reference; CPU time per image on the CPU."""
    batch, steps, short = args.batch_size, args.steps, args.short_steps
    metrics = {"whole": f"Whole run, {steps} steps (img/s)"}
    if device.type == "cpu":
        metrics["step"] = "Median step, not the first (img/s)"
        metrics["cpu"] = "Whole run, per CPU-second, all processes (img)"
    if args.steady:
        metrics["steady"] = f"Steady state, steps {short + 1}-{steps} by difference (img/s)"
    rows, cells = [], []
    for variant in args.variants:
        base: dict = {}
        for name in result["loops"]:
            t = result["timings"][variant, name]
            per_step = {"whole": common.median(t.long) / steps, "step": common.median(t.steps),
                        "cpu": common.median(t.cpu) / steps}
            if args.steady:
                per_step["steady"] = common.median([(lg - sh) / (steps - short)
                                                    for lg, sh in zip(t.long, t.short, strict=True)])
            row = {"variant": variant, "loop": name, "times_long_s": t.long, "cpu_long_s": t.cpu,
                   "times_short_s": t.short, "step_times_s": t.steps}
            row.update({f"{m}_s_per_step": per_step[m] for m in metrics})
            row.update({f"{m}_img_s": batch / per_step[m] for m in metrics})
            base = base or row  # the reference comes first
            cell = [variant, name]
            for m in metrics:
                speed, ratio = row[f"{m}_img_s"], row[f"{m}_img_s"] / base[f"{m}_img_s"]
                cell += [f"{speed:,.1f}", f"{ratio:.2f}x"] if math.isfinite(ratio) else ["-", "-"]
            rows.append(row)
            cells.append(cell)
    headers = ["Variant", "Loop"]
    for title in metrics.values():
        headers += [title, "vs ref"]
    return common.markdown_table(headers, cells), rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help="steps per timed run (default: 2 on cpu, 200 on cuda)")
    parser.add_argument("--steady", action=argparse.BooleanOptionalAction,
                        help="also time runs of steps/10 steps and report the steady state from the "
                             "difference (default: on for cuda, off for cpu, where a step takes seconds)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="baseline,fused", help="comma-separated model variants")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--configs", help="catgan configs to compare, e.g. fp32,fp32+cl,bf16+cl "
                                          "(overrides --precision/--channels-last/--compile)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument("--data", type=Path, default=common.default_data(),
                        help="folder or .zip of images (default: the shared cat sample when present, "
                             "else synthetic JPEGs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.steps = args.steps or (200 if args.device == "cuda" else 2)
    if args.steps < 1 or args.repeats < 1 or args.batch_size < 1 or args.threads < 0:
        parser.error("--steps, --repeats and --batch-size must be >= 1, --threads >= 0")
    args.steady = args.device == "cuda" if args.steady is None else args.steady
    if args.steady and args.steps < 2:
        parser.error("--steady needs --steps >= 2")
    args.short_steps = max(1, args.steps // 10)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        args.configs = [Config.parse(s) for s in args.configs.split(",")] if args.configs else \
            [Config(args.precision, args.channels_last, args.compile)]
    except argparse.ArgumentTypeError as err:
        parser.error(f"--configs: {err}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    load_before = common.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        image_root, images, data = prepare(args, Path(tmp))
        result = measure(args, image_root, images, device)
    text, rows = table(args, result, device)
    info = {**common.machine(args.device), "data": data, "batch_size": args.batch_size,
            "load_average_before": load_before, "load_average_after": common.load_average()}
    print(common.describe(info), "", text, sep="\n")
    if args.json:
        common.write_json(args.json, {"machine": info, "rows": rows, "steps": args.steps,
                                      "short_steps": args.short_steps if args.steady else None})


if __name__ == "__main__":
    main()
