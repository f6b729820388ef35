"""Seeds and thread count: the same params give the same numbers on CPU, bit for bit."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, threads: int) -> None:
    # Results are bit-identical across CPU runs only with the thread count pinned.
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
