"""One training process or several under torchrun: which one this is, and the collectives training needs.

Gradients are averaged by hand after each backward instead of through DistributedDataParallel: a GAN
step runs D three times before G's backward, which DDP's reducer does not expect, and averaging by
hand keeps the single-process step exactly as it was.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from catgan.errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Only the main process writes checkpoints, outputs and the MLflow run."""
        return self.rank == 0

    def average_gradients(self, module: torch.nn.Module) -> None:
        if self.world == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        torch_dist.all_reduce(flat)
        flat.div_(self.world)
        for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(averaged)

    def average(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the processes: a new tensor, or ``tensor`` itself with one."""
        if self.world == 1:
            return tensor
        total = tensor.clone()
        torch_dist.all_reduce(total)
        return total.div_(self.world)

    def average_batchnorm_statistics(self, module: torch.nn.Module) -> None:
        """Give every process the same running statistics, so rank 0's checkpoint speaks for all."""
        if self.world == 1:
            return
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(self.average(m.running_mean))
                m.running_var.copy_(self.average(m.running_var))

    def gather(self, obj) -> list:
        """``obj`` from every process, in rank order (for per-process RNG states)."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def from_env(device_name: str) -> tuple[Dist, torch.device]:
    """The process group torchrun describes in the environment, joined; or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist = Dist(rank=int(os.environ.get("RANK", "0")), world=world,
                local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    device = select_device(device_name, dist.local_rank)
    if world > 1 and not torch_dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist, device


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def describe(device: torch.device) -> str:
    """What trained a run, for its budget: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh
                      if line.startswith("model name")), model)
    return f"cpu: {model}, {torch.get_num_threads()} threads"
