"""Which code, software and machine made a result: what a study folder and gpu_check.sh record.

The code is named by a content hash of catgan/, stages/ and benchmarks/, always, and also by this
project's git commit (and whether its tree was clean) where the project's root is the top of a git
checkout. The device machine gets a copy of the working tree, maybe without .git and maybe inside
another repository's checkout, whose commit would name other code: only the hash names it there.
Run ``python -m catgan.study.provenance`` in a checkout to get the hash of its code and compare.

    python -m catgan.study.provenance [--json PATH] [--command TEXT]   one line; the record as JSON
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("catgan", "stages", "benchmarks")


def code_files(root: Path = ROOT) -> list[Path]:
    """The files whose bytes are the code: what a copy of the working tree carries, without caches."""
    found = []
    for folder in CODE_DIRS:
        for path in (root / folder).rglob("*"):
            parts = path.relative_to(root).parts
            if path.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in parts):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def content_hash(root: Path = ROOT) -> str:
    """sha256 over each code file's relative path and its bytes' sha256, in path order."""
    digest = hashlib.sha256()
    for path in code_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code(root: Path = ROOT) -> dict:
    """commit and clean (None without a checkout of this project), content_hash, and a note
    saying why there is no commit."""
    hashed = ", ".join(f"{d}/" for d in CODE_DIRS)
    record = {"commit": None, "clean": None, "content_hash": content_hash(root), "hashed": hashed}
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is not None and Path(top).resolve() == root.resolve():
        record["commit"] = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain")
        record["clean"] = None if status is None else status == ""
    if record["commit"] is None:
        other = f"; {top} is another repository's checkout, whose commit names other code" \
            if top else ""
        record["note"] = (f"no git checkout of this project at {root} (a copy of its files"
                          f"{other}): the content hash of {hashed} names the code")
    return record


def record(command: list[str] | None = None, device=None, wall_s: float | None = None) -> dict:
    """The code, Python, torch, CUDA and cuDNN versions, the device, the command line, the date
    and, where given, the wall time."""
    import torch

    from catgan.training.distributed import describe

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    out = {"code": code(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": cudnn, "device": describe(device),
           "command": shlex.join(command if command is not None else sys.argv),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 1)
    return out


def code_line(code: dict) -> str:
    """The code in words: the commit and whether it was clean, or why there is none; the hash."""
    short = code["content_hash"][:12]
    if code.get("commit"):
        state = {True: "clean tree", False: "uncommitted changes", None: "tree state unknown"}
        return (f"commit {code['commit'][:12]} ({state[code.get('clean')]}), content hash "
                f"{short} of {code['hashed']}")
    return f"no git checkout: content hash {short} of {code['hashed']}"


def line(rec: dict) -> str:
    """The record in one line, as gpu_check.sh prints it."""
    parts = [code_line(rec["code"]), f"torch {rec['torch']}, CUDA {rec['cuda'] or 'none'}",
             rec["device"]]
    if "wall_s" in rec:
        parts.append(f"{rec['wall_s']:.1f} s")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m catgan.provenance", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the record here")
    p.add_argument("--command", help="the command line to record (default: this one)")
    args = p.parse_args(argv)
    rec = record(shlex.split(args.command) if args.command else None)
    print(line(rec))
    if args.json:
        from catgan.fileio import write_json

        write_json(args.json, rec)


if __name__ == "__main__":
    main()
