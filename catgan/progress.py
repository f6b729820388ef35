"""Progress bars from tqdm when it is installed; plain iteration where only torch, numpy and
Pillow are (benchmarks/gpu_check.sh on a bare GPU machine)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator


class _Plain:
    def __init__(self, iterable: Iterable):
        self._iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self._iterable)

    def set_postfix(self, values: dict) -> None: ...


def progress(iterable: Iterable, desc: str, total: int | None = None, show: bool = True, **options):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(iterable)
    # disable is passed only to hide a bar, so that TQDM_DISABLE and friends still work otherwise.
    return tqdm(iterable, desc=desc, total=total, **options, **({} if show else {"disable": True}))
