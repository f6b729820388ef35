"""What the per-epoch quality check costs against the epoch it follows, measured side by side.

Times training steps at the committed settings (batch 128, fp32, channels_last) and the check of
catgan/training/monitor.py (eval.monitor_samples generated and real images: SWD, D scores, diversity) on
the same networks, interleaved, then reports the check as a share of a full epoch.

    python -m benchmarks.monitor_cost --variant baseline --images 9303
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from benchmarks.common import median, synthetic_array
from catgan.config import parse_params
from catgan.training.distributed import Dist
from catgan.training.monitor import Monitor
from catgan.training.state import new_state
from catgan.training.step import gan_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="baseline", choices=("baseline", "fused"))
    parser.add_argument("--images", type=int, default=9303, help="images per epoch (the Kaggle set)")
    parser.add_argument("--rounds", type=int, default=3, help="checks timed; 8 steps per round")
    parser.add_argument("--samples", type=int, default=0, help="0 = eval.monitor_samples")
    args = parser.parse_args()
    raw = {"model": {"variant": args.variant}, "tracking": {"enabled": False}}
    if args.samples:
        raw["eval"] = {"monitor_samples": args.samples}
    params = parse_params(raw)
    torch.manual_seed(0)
    images = synthetic_array(2 * params.eval.monitor_samples)
    state = new_state(params, torch.device("cpu"), Dist())
    monitor = Monitor(images, every=1, samples=params.eval.monitor_samples, seed=params.eval.seed,
                      latent_dim=params.model.latent_dim, batch_size=params.eval.batch_size,
                      device=torch.device("cpu"))
    data = torch.from_numpy(images)
    step_s, check_s = [], []
    for i in range(args.rounds + 1):
        for _ in range(8):
            pick = torch.randint(0, len(data), (params.train.batch_size,))
            real = (data[pick].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
            start = time.perf_counter()
            gan_step(state, real, params)
            if i:  # the first round warms up allocators and oneDNN primitives
                step_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        monitor.measure(state.G, state.D)
        if i:
            check_s.append(time.perf_counter() - start)
    epoch = median(step_s) * math.ceil(args.images / params.train.batch_size)
    check = median(check_s)
    print(f"{args.variant}, batch {params.train.batch_size}, {torch.get_num_threads()} threads: "
          f"step {median(step_s):.3f} s, epoch of {args.images} images {epoch:.1f} s, quality check "
          f"of {params.eval.monitor_samples} images {check:.2f} s = {100 * check / epoch:.1f}% "
          "of an epoch")


if __name__ == "__main__":
    main()
