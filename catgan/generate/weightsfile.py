"""A generator in one small file: its weights in fp16 and what it is, as the GPU study returns them.

The device machine returns at most 8 files of 16 MiB each, and the archive takes one: each
variant's generator gets a file of its own, at most 8 MiB (a DCGAN generator's 3.8 M weights in fp16
are 7.3 MiB). The file is a plain dict of strings, numbers and tensors, read with
``weights_only=True``; ``catgan sample FILE`` draws from it.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from catgan.errors import UserError
from catgan.fileio import write_bytes

LIMIT = 8 << 20
KIND = "catgan generator, fp16"


def write(path: Path, generator: torch.nn.Module, info: dict) -> int:
    """``generator``'s weights in fp16 with ``info`` (variant, latent_dim, run, ...) at ``path``;
    returns the file's size."""
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
             for k, v in generator.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"kind": KIND, **info, "state_dict": state}, buf)
    write_bytes(path, buf.getvalue())
    return len(buf.getvalue())


def read(path: Path) -> tuple[dict, dict]:
    """(info, state_dict in float32) from a file ``write`` made; a clear error for anything else."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; pass a generator file the GPU study wrote "
                        "(<archive>.generator-<arm>.pt)") from None
    except pickle.UnpicklingError:
        raise UserError(f"{path}: holds pickled objects, not only weights; refusing to load it") \
            from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path}: not a PyTorch weights file ({str(err).splitlines()[0]}); "
                        "copy it again, or pass a generator file the GPU study wrote") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise UserError(f"{path}: a PyTorch file, but not a {KIND} file (no kind {KIND!r}); "
                        "pass a generator file the GPU study wrote, or a models/ folder")
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    return {k: v for k, v in data.items() if k != "state_dict"}, state
