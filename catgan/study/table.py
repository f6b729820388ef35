"""Fixed-width text tables for the terminal."""
from __future__ import annotations

from typing import Sequence


def align(rows: Sequence[Sequence[str]], rule: bool = False) -> str:
    """Rows of cells as fixed-width columns; ``rule`` underlines the first row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if rule:
        rows = [rows[0], ["-" * w for w in widths], *rows[1:]]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
