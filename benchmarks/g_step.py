"""One training step two ways, interleaved in one process: catgan's against the course's.

catgan's step draws D's fakes under ``no_grad`` and freezes D while G's loss back-propagates
through it, so no weight gradient is computed for D there. The course's step builds G's graph for
D's fakes and computes D's weight gradients in G's step, only to zero them before D's next step.
Both give the same weights bit for bit (tests/test_train.py checks it); this measures the time.

    python -m benchmarks.g_step --variant fused --steps 60
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from catgan.data.synthetic import draw_cat
from catgan.losses import d_loss, g_loss
from catgan.models import build
from catgan.train import frozen


def course_step(G, D, opt_g, opt_d, real, z_d, z_g) -> None:
    loss_d = d_loss(D(real), D(G(z_d).detach()))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = g_loss(D(G(z_g)), "non_saturating")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


def catgan_step(G, D, opt_g, opt_d, real, z_d, z_g) -> None:
    with torch.no_grad():
        fake = G(z_d)
    loss_d = d_loss(D(real), D(fake))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    with frozen(D):
        loss_g = g_loss(D(G(z_g)), "non_saturating")
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    opt_g.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="baseline", choices=("baseline", "fused"))
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each kind")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([np.asarray(draw_cat(rng)).transpose(2, 0, 1)
                                        for _ in range(256)]))
    G, D = (net.to(memory_format=torch.channels_last)
            for net in build(args.variant, 128, "dcgan"))
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    steps = {"course": course_step, "catgan": catgan_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps + 3):
        # Alternate which goes first, so drift in the machine's speed hits both alike.
        for name in (("course", "catgan") if i % 2 else ("catgan", "course")):
            pick = torch.randint(0, len(images), (args.batch_size,))
            real = (images[pick].float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
            z_d, z_g = (torch.randn(args.batch_size, 128, 1, 1) for _ in range(2))
            start = time.perf_counter()
            steps[name](G, D, opt_g, opt_d, real, z_d, z_g)
            if i >= 3:  # the first steps warm up allocators and oneDNN primitives
                times[name].append(time.perf_counter() - start)
    course, ours = (statistics.median(times[name]) for name in ("course", "catgan"))
    print(f"{args.variant}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"medians of {args.steps} interleaved steps: course {course:.3f} s, catgan {ours:.3f} s, "
          f"speed-up {course / ours:.2f}x")


if __name__ == "__main__":
    main()
