"""One training step two ways, interleaved in one process: catgan's against the course's.

catgan's step (``catgan.training.step.gan_step``) draws D's fakes under ``no_grad``, freezes D while G's
loss back-propagates through it, so no weight gradient is computed for D there. The course's step
builds G's graph for D's fakes and computes D's weight gradients in G's step, only to zero them
before D's next step. Both give the same weights bit for bit (tests/test_train.py checks it); this
measures the time, on the same networks and optimisers.

    python -m benchmarks.g_step --variant fused --steps 60
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import median, synthetic_array
from catgan.config import parse_params
from catgan.model.losses import d_loss, g_loss
from catgan.training.distributed import Dist
from catgan.training.state import new_state
from catgan.training.step import gan_step


def course_step(state, real: torch.Tensor, latent: int) -> None:
    G, D, b = state.G, state.D, real.shape[0]
    loss_d = d_loss(D(real), D(G(torch.randn(b, latent, 1, 1, generator=state.noise)).detach()))
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    loss_g = g_loss(D(G(torch.randn(b, latent, 1, 1, generator=state.noise))), "non_saturating")
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="baseline", choices=("baseline", "fused"))
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each kind")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    params = parse_params({"model": {"variant": args.variant, "init": "dcgan"},
                           "train": {"batch_size": args.batch_size, "threads": args.threads},
                           "tracking": {"enabled": False}})
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.from_numpy(synthetic_array(256))
    state = new_state(params, torch.device("cpu"), Dist())
    latent = params.model.latent_dim
    steps = {"course": lambda real: course_step(state, real, latent),
             "catgan": lambda real: gan_step(state, real, params)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps + 3):
        # Alternate which goes first, so drift in the machine's speed hits both alike.
        for name in (("course", "catgan") if i % 2 else ("catgan", "course")):
            pick = torch.randint(0, len(images), (args.batch_size,))
            real = (images[pick].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
            start = time.perf_counter()
            steps[name](real)
            if i >= 3:  # the first steps warm up allocators and oneDNN primitives
                times[name].append(time.perf_counter() - start)
    course, ours = median(times["course"]), median(times["catgan"])
    print(f"{args.variant}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"medians of {args.steps} interleaved steps: course {course:.3f} s, catgan {ours:.3f} s, "
          f"speed-up {course / ours:.2f}x")


if __name__ == "__main__":
    main()
