"""What the recipe's techniques add to a training step, as ratios to the plain step, side by side.

Each arm is ``catgan.training.step.gan_step`` on its networks at the committed settings (baseline, batch
128, fp32, channels_last) with one set of overrides: ``train.ema``, ``train.augment`` (DiffAugment),
both, and for reference ``train.loss: rasgan`` (one more D forward in G's step) and
``model.d_norm: spectral``. The arms take turns step by step, in an order that rotates every round,
on the same real batches, so that drift in a shared machine's speed hits them alike. Each step
is timed by the wall clock and by the CPU time of this process (all its threads), which other
people's jobs on the same cores move less.

``--kornia`` adds an arm whose augmentations are kornia's instead of catgan's (colour jitter,
translation, erasing with DiffAugment's ranges), for the choice between the two; kornia is not a
dependency: install it wherever you run this. A second table times the added work on its own in
each round (an EMA update; one augmentation call forward, and forward and back), which is short
and so less exposed to other jobs than the difference of two whole steps.

    python -m benchmarks.recipe_cost --rounds 10
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections.abc import Callable
from unittest import mock

import torch

import catgan.training.step as step_mod
from benchmarks.common import describe, load_average, machine, markdown_table, median, synthetic_array
from catgan.config import parse_params
from catgan.model.ema import GeneratorEMA
from catgan.training.distributed import Dist
from catgan.training.state import new_state

POLICY = "color,translation,cutout"
ARMS = {
    "plain": {},
    "ema": {"train": {"ema": 0.999}},
    "augment": {"train": {"augment": POLICY}},
    "ema+augment": {"train": {"ema": 0.999, "augment": POLICY}},
    "rasgan": {"train": {"loss": "rasgan"}},
    "spectral_norm": {"model": {"d_norm": "spectral"}},
}


def kornia_augment():
    """DiffAugment's three policies done by kornia, on x in [-1, 1], as ``augment`` is called."""
    import kornia.augmentation as K

    colour = K.ColorJiggle(brightness=0.5, contrast=0.5, saturation=1.0, p=1.0)
    # Whole-pixel shifts of up to 1/8 of the side, zeros behind; a 32 x 32 square set to 0.
    shift = K.RandomAffine(degrees=0, translate=(0.125, 0.125), resample="nearest", p=1.0)
    erase = K.RandomErasing(scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0, p=1.0)

    def run(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
        # kornia draws from torch's global generator; its colour ops want [0, 1].
        x = colour(x.add(1).div(2)).mul(2).sub(1)
        return erase(shift(x)).contiguous(memory_format=torch.channels_last)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="baseline", choices=("baseline", "fused"))
    parser.add_argument("--rounds", type=int, default=10, help="timed steps of each arm")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each arm first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    parser.add_argument("--arms", default=",".join(list(ARMS)[1:]),
                        help=f"some of {', '.join(list(ARMS)[1:])}; plain always runs")
    parser.add_argument("--kornia", action="store_true", help="add augment done by kornia")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arms = {name: ARMS[name] for name in ["plain", *args.arms.split(",")]}
    if args.kornia:
        arms["augment (kornia)"] = ARMS["augment"]
    patches = {name: contextlib.nullcontext() for name in arms}
    if args.kornia:
        patches["augment (kornia)"] = mock.patch.object(step_mod, "augment", kornia_augment())
    info = machine("cpu")
    print(describe(info), f"\n- load average before: {load_average()}", flush=True)

    torch.manual_seed(0)
    images = torch.from_numpy(synthetic_array(4 * args.batch_size))
    setups = {}
    for name, overrides in arms.items():
        raw = {"model": {"variant": args.variant, **overrides.get("model", {})},
               "train": {"batch_size": args.batch_size, **overrides.get("train", {})},
               "tracking": {"enabled": False}}
        params = parse_params(raw)
        torch.manual_seed(0)
        setups[name] = (params, new_state(params, torch.device("cpu"), Dist()))

    parts = part_timers(setups["plain"][1].G, images, args.batch_size, args.kornia)
    wall: dict[str, list[float]] = {name: [] for name in [*arms, *parts]}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    names = list(arms)
    for i in range(args.warmup + args.rounds):
        pick = torch.randint(0, len(images), (args.batch_size,))
        real = (images[pick].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
        shift = i % len(names)
        runs = {name: functools.partial(step, *setups[name], real, patches[name])
                for name in names[shift:] + names[:shift]}
        for name, run in [*runs.items(), *parts.items()]:
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            if i >= args.warmup:  # the first calls warm up allocators and oneDNN primitives
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    print(f"- load average after: {load_average()}\n")
    plain, plain_cpu = median(wall["plain"]), median(cpu["plain"])
    print(f"{args.variant}, batch {args.batch_size}, {torch.get_num_threads()} threads, medians of "
          f"{args.rounds} interleaved steps of each arm after {args.warmup} untimed:\n")
    print(markdown_table(["arm", "step (wall)", "vs plain", "step (CPU time)", "vs plain"], [
        [name, f"{median(wall[name]):.3f} s", f"{median(wall[name]) / plain:.3f}x",
         f"{median(cpu[name]):.3f} s", f"{median(cpu[name]) / plain_cpu:.3f}x"] for name in arms]))
    print("\nThe same work timed alone in each round, and what a step does of it (the EMA update "
          "once; DiffAugment on D's real and fake batches forward only, on G's fakes forward and "
          "back) against the plain step:\n")
    rows = []
    for what, per_step in (("EMA update", {"EMA update": 1}),
                           *((f"augment ({lib})", {f"augment forward ({lib})": 2,
                                                    f"augment forward and back ({lib})": 1})
                             for lib in ("catgan", "kornia")[:1 + args.kornia])):
        w = sum(n * median(wall[part]) for part, n in per_step.items())
        c = sum(n * median(cpu[part]) for part, n in per_step.items())
        rows.append([what, ", ".join(f"{n} x {1000 * median(wall[p]):.1f} ms"
                                     for p, n in per_step.items()),
                     f"{1000 * w:.1f} ms", f"{100 * w / plain:.1f}%", f"{100 * c / plain_cpu:.1f}%"])
    print(markdown_table(["added work", "calls a step (wall each)", "a step (wall)",
                          "of the plain step (wall)", "of the plain step (CPU time)"], rows))


def step(params, state, real: torch.Tensor, patch) -> None:
    with patch:
        step_mod.gan_step(state, real, params)


def part_timers(G: torch.nn.Module, images: torch.Tensor, batch: int,
                kornia: bool) -> dict[str, Callable[[], object]]:
    """The added work on its own: an EMA update of a copy of G, and one augmentation call on a
    real batch, forward only or forward and back, catgan's (and kornia's)."""
    average = GeneratorEMA(G, 0.999)
    gen = torch.Generator().manual_seed(0)
    real = (images[:batch].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
    fns = {"catgan": step_mod.augment, **({"kornia": kornia_augment()} if kornia else {})}

    def forward_and_back(fn) -> None:
        fn(real.clone().requires_grad_(), POLICY, gen).sum().backward()

    parts = {"EMA update": functools.partial(average.update_parameters, G)}
    for lib, fn in fns.items():
        parts[f"augment forward ({lib})"] = functools.partial(fn, real, POLICY, gen)
        parts[f"augment forward and back ({lib})"] = functools.partial(forward_and_back, fn)
    return parts


if __name__ == "__main__":
    main()
