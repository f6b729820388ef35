"""Training images/second and TFLOP/s in the steady state: the course's loop against catgan's, side by side.

Both loops train the same networks at the same batch size on the same images and device. The
reference reads the JPEG files through ImageFolder; catgan reads the uint8 array its preprocess
stage makes from those files (made once, outside the timing).

Only steady-state steps are timed, in windows of ``--steps`` steps between two device
synchronisations (on the CPU, plain perf_counter); no sample grid, checkpoint or quality check
falls inside one. catgan's window is its own epoch loop (``catgan.training.loop._epoch``: batch gather,
the step, a host read every ``train.log_every`` steps), after ``--warmup`` untimed steps per
config (cuDNN autotuning, compilation). The course's window is its loop, ``.item()`` after every
step included, and starts after ``--warmup`` steps of the same call (its loader's workers start
anew with each call). Windows alternate (ref, ours, ref, ours ...) for ``--repeats`` rounds; the
table shows medians.

Where torchvision is missing (the GPU study's machine), the course's loop reads catgan's array
through its own DataLoader instead of the JPEG files (``course_loader`` in the results says which).

The FLOPs of one training step (D step + G step, forward and backward) are counted once per loop
and variant by torch.utils.flop_counter on an fp32 eager copy (precision, layout and compilation
change the kernels, not the count; only matmuls and convolutions count). TFLOP/s is that count over
the measured step time, shown beside ``--peak-tflops``.

Run from the repo root:  python -m benchmarks.train_throughput [--device cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common, reference_loop
from catgan.config import Params, parse_params
from catgan.data.preprocess import load_images, preprocess
from catgan.errors import cli_entry
from catgan.training.distributed import Dist
from catgan.training.loop import _epoch
from catgan.training.state import new_state
from catgan.training.step import gan_step

REFERENCE = "reference (course)"
# An H200's bf16 dense tensor-core peak as issue #21 gives it; NVIDIA's datasheet says 989 for the
# SXM board and 835 for the NVL card, so this errs towards a larger share.
PEAK_TFLOPS = 790.0
LATENT, LR = 128, 0.0002  # catgan's defaults, which the course shares


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

    def params(self, variant: str, batch: int, device: torch.device) -> Params:
        return parse_params({
            "model": {"variant": variant},
            "train": {"batch_size": batch, "device": device.type, "precision": self.precision,
                      "channels_last": self.channels_last, "compile": self.compile},
            "tracking": {"enabled": False},
        })


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Ours:
    """catgan's networks and epoch loop for one variant and config, warmed up on construction."""

    def __init__(self, data: torch.Tensor, variant: str, config: Config, batch: int, warmup: int):
        self.data, self.device = data, data.device
        self.params = config.params(variant, batch, data.device)
        self.state = new_state(self.params, data.device, Dist())
        self.epochs = 0
        self._run(warmup)

    def _run(self, steps: int) -> None:
        torch.backends.cudnn.benchmark = self.device.type == "cuda"  # as catgan.training.loop.train sets it
        self.epochs += 1
        _epoch(self.state, self.data, self.params, self.epochs, steps)

    def window(self, steps: int) -> float:
        sync(self.device)
        start = time.perf_counter()
        self._run(steps)
        sync(self.device)
        return time.perf_counter() - start


def course_reads_jpegs() -> bool:
    """Whether the course's loop reads the JPEG files through its ImageFolder here. Where
    torchvision is missing (the GPU study's machine) it reads catgan's uint8 array through the
    course's DataLoader instead: no JPEG decoding, so the reference only gets faster and a ratio
    against it only smaller."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


class Course:
    """The course's networks, loss and loader for one variant; each window is one call of its loop."""

    def __init__(self, image_root: Path, images: np.ndarray, variant: str, batch: int,
                 device: torch.device, warmup: int):
        self.device, self.warmup = device, warmup
        self.loader = reference_loop.make_loader(image_root, batch, device) if course_reads_jpegs() \
            else reference_loop.array_loader(images, batch, device)
        self.course = reference_loop.setup(variant, LATENT, LR, device)

    def window(self, steps: int) -> float:
        torch.backends.cudnn.benchmark = False  # the course leaves cuDNN autotuning off
        marks: list[float] = []
        count = itertools.count(1)

        def on_step(_epoch: int, _values: tuple) -> None:
            # The course reads every loss with .item(), so a step has finished when this runs.
            if next(count) in (self.warmup, self.warmup + steps):
                sync(self.device)
                marks.append(time.perf_counter())

        reference_loop.train(self.course, self.loader, self.warmup + steps, self.device,
                             on_step=on_step)
        return marks[1] - marks[0]


def step_flops(variant: str, batch: int, device: torch.device, course: bool) -> int:
    """FLOPs of one training step of the course's loop or catgan's, counted on an fp32 eager copy."""
    real = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        if course:
            c = reference_loop.setup(variant, LATENT, LR, device)
            reference_loop.train_discriminator(c.G, c.D, real, c.opt_d, c.criterion, LATENT, device)
            reference_loop.train_generator(c.G, c.D, c.opt_g, c.criterion, batch, LATENT, device)
        else:
            params = Config().params(variant, batch, device)
            gan_step(new_state(params, device, Dist()), real, params)
    return counter.get_total_flops()


def prepare(args, tmp: Path) -> tuple[Path, np.ndarray, str]:
    """(ImageFolder root, catgan's uint8 array, data description), each long enough that no loop
    reaches the end of its epoch inside a call."""
    root, description = common.prepare_images(args.data, tmp)
    files = common.image_files(root)
    needed = (args.warmup + args.steps) * args.batch_size
    image_root = common.link_images(files, tmp / "imagefolder", needed)
    manifest = preprocess(root, tmp / "prepared", image_size=64, min_size=32, dedup=True,
                          max_bad_fraction=0.05, workers=0)
    images = np.asarray(load_images(tmp / "prepared" / "images.npy"))
    images = np.ascontiguousarray(np.resize(images, (max(needed, len(images)), *images.shape[1:])))
    common.warm_page_cache(files)
    return image_root, images, f"{description}; catgan keeps {manifest['files_used']} after dedup"


def build_loops(args, image_root: Path, images: np.ndarray, device: torch.device) -> dict:
    """(variant, loop name) -> loop, the reference first in each variant; ours warm up here."""
    data = torch.from_numpy(images).to(device)
    loops = {}
    for variant in args.variants:
        if args.reference:
            loops[variant, REFERENCE] = Course(image_root, images, variant, args.batch_size,
                                               device, args.warmup)
        for config in args.configs:
            loops[variant, config.label] = Ours(data, variant, config, args.batch_size, args.warmup)
    return loops


def result_rows(args, seconds: dict, flops: dict) -> list[dict]:
    out, first = [], {}
    for (variant, name), windows in seconds.items():
        speeds = [args.steps * args.batch_size / s for s in windows]
        step_s = common.median(windows) / args.steps
        tflops = flops[variant, name == REFERENCE] / step_s / 1e12
        row = {"variant": variant, "loop": name, "window_s": windows,
               "img_s": args.batch_size / step_s, "img_s_min": min(speeds),
               "img_s_max": max(speeds), "step_gflop": flops[variant, name == REFERENCE] / 1e9,
               "tflops": tflops, "peak_fraction": tflops / args.peak_tflops}
        row["vs_first"] = row["img_s"] / first.setdefault(variant, row["img_s"])
        out.append(row)
    return out


def table(args, rows: list[dict]) -> str:
    first = "ref" if args.reference else args.configs[0].label.removeprefix("catgan ")
    headers = ["Variant", "Loop", f"img/s (median of {args.repeats})", "range", f"vs {first}",
               "GFLOP/step", "TFLOP/s", f"of {args.peak_tflops:g} TFLOP/s"]
    cells = [[r["variant"], r["loop"], f"{r['img_s']:,.1f}",
              f"{r['img_s_min']:,.1f}-{r['img_s_max']:,.1f}", f"{r['vs_first']:.2f}x",
              f"{r['step_gflop']:,.1f}", f"{r['tflops']:.3g}", f"{100 * r['peak_fraction']:.2g}%"]
             for r in rows]
    return common.markdown_table(headers, cells)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1 on cpu, 10 on cuda)")
    parser.add_argument("--steps", type=int, help="steps per timed window (default: 2 on cpu, 40 on cuda)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per loop")
    parser.add_argument("--variants", default="baseline,fused", help="comma-separated model variants")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--configs", help="catgan configs to compare, e.g. fp32,fp32+cl,bf16+cl "
                                          "(overrides --precision/--channels-last/--compile)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="time the course's loop too (the ratios are against it, else against "
                             "the first config)")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS,
                        help=f"the peak the TFLOP/s are shown against (default {PEAK_TFLOPS:g}: an "
                             "H200's bf16 dense)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument("--data", type=Path, default=common.default_data(),
                        help="folder or .zip of images (default: the shared cat sample when present, "
                             "else synthetic JPEGs)")
    parser.add_argument("--json", type=Path, help="also write the results here, after every round")
    args = parser.parse_args(argv)
    on_cuda = args.device == "cuda"
    args.warmup = (10 if on_cuda else 1) if args.warmup is None else args.warmup
    args.steps = args.steps or (40 if on_cuda else 2)
    if min(args.steps, args.warmup, args.repeats, args.batch_size) < 1 or args.threads < 0 \
            or args.peak_tflops <= 0:
        parser.error("--steps, --warmup, --repeats and --batch-size must be >= 1, --threads >= 0, "
                     "--peak-tflops > 0")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        args.configs = [Config.parse(s) for s in args.configs.split(",")] if args.configs else \
            [Config(args.precision, args.channels_last, args.compile)]
    except argparse.ArgumentTypeError as err:
        parser.error(f"--configs: {err}")
    if on_cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("catgan.training.loop").setLevel(logging.WARNING)  # else an epoch line per window
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    info = {**common.machine(args.device), "batch_size": args.batch_size,
            "load_average_before": common.load_average()}
    if args.reference:
        info["course_loader"] = "ImageFolder over the JPEG files" if course_reads_jpegs() else \
            "DataLoader over catgan's array (no torchvision)"
    flops = {(v, course): step_flops(v, args.batch_size, device, course)
             for v in args.variants for course in (False, True)[:1 + args.reference]}
    with tempfile.TemporaryDirectory() as tmp:
        image_root, images, info["data"] = prepare(args, Path(tmp))
        loops = build_loops(args, image_root, images, device)
        seconds: dict = {key: [] for key in loops}
        for _ in range(args.repeats):
            for key, loop in loops.items():
                seconds[key].append(loop.window(args.steps))
            if args.json:  # after every round, so a time limit keeps the rounds already done
                common.write_json(args.json, {"machine": info, "steps": args.steps,
                                              "warmup": args.warmup, "peak_tflops": args.peak_tflops,
                                              "rows": result_rows(args, seconds, flops)})
    info["load_average_after"] = common.load_average()
    print(common.describe(info), "", table(args, result_rows(args, seconds, flops)), sep="\n")


if __name__ == "__main__":
    main()
