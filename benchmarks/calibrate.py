"""How many steps until the fixed-latent grid shows cats, and which settings change that.

A bare loop with catgan's models and losses at the demo's settings (DCGAN init, Adam 2e-4 with
betas 0.5/0.999, batch 16, the 512 demo images) on its own random stream, torch's global one.
It saves the grid of 64 fixed latents every ``--every`` steps. The calibration figure of docs/study.md is

    python -m benchmarks.calibrate --threads 1 --flush-denormal --steps 2000 --out calibration/

The knobs tried against the step budget are options here: one-sided label smoothing, separate
learning rates, several G steps per D step, and instance noise that decays to zero. The noise is
drawn even at ``--noise 0``, so every setting sees the same latents and batches.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import synthetic_array
from catgan.images import grid_image, save_png
from catgan.model.losses import g_loss
from catgan.model.nets import build, sample

LATENT = 128


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="fused", choices=("baseline", "fused"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250, help="save the grid every this many steps")
    parser.add_argument("--images", type=int, default=512, help="synthetic cats (data.seed 0)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr-g", type=float, default=2e-4)
    parser.add_argument("--lr-d", type=float, default=2e-4)
    parser.add_argument("--smooth", type=float, default=1.0, help="D's target for real images")
    parser.add_argument("--g-steps", type=int, default=1, help="G steps per D step")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="instance noise std at step 0, decaying linearly to 0")
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    parser.add_argument("--flush-denormal", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("calibration"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    images = torch.from_numpy(synthetic_array(args.images))
    torch.manual_seed(0)
    G, D = (net.to(memory_format=torch.channels_last) for net in build(args.variant, LATENT, "dcgan"))
    opt_g = torch.optim.Adam(G.parameters(), args.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), args.lr_d, betas=(0.5, 0.999))
    torch.set_flush_denormal(args.flush_denormal)
    fixed = torch.randn(64, LATENT, 1, 1, generator=torch.Generator().manual_seed(7))
    order, at, start = torch.randperm(len(images)), 0, time.time()
    for step in range(args.steps):
        if at + args.batch_size > len(images):  # a new epoch: fresh order, no partial batch
            order, at = torch.randperm(len(images)), 0
        real = images[order[at:at + args.batch_size]].float() / 127.5 - 1
        real, at = real.contiguous(memory_format=torch.channels_last), at + args.batch_size
        sigma = args.noise * max(0.0, 1 - step / args.steps)
        fake = G(torch.randn(args.batch_size, LATENT, 1, 1)).detach()
        real_logits = D(real + sigma * torch.randn_like(real))
        fake_logits = D(fake + sigma * torch.randn_like(fake))
        loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, args.smooth))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        for _ in range(args.g_steps):
            fake = G(torch.randn(args.batch_size, LATENT, 1, 1))
            loss_g = g_loss(D(fake + sigma * torch.randn_like(fake)), "non_saturating")
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            save_png(grid_image(sample(G, fixed)), args.out / f"step_{step + 1:05d}.png")
            print(f"step {step + 1}: loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f} "
                  f"D(real) {torch.sigmoid(real_logits).mean().item():.3f} "
                  f"D(fake) {torch.sigmoid(fake_logits).mean().item():.3f}, "
                  f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
