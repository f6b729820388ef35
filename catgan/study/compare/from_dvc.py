"""Experiments of a DVC project, read from one ``dvc exp show --json``."""
from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catgan.config import flat_numbers, flatten
from catgan.errors import UserError
from catgan.study.compare.runs import Record, group, latest_per_seed, record
from catgan.study.dvccli import dvc_executable

log = logging.getLogger(__name__)

METRIC_FILES = {"metrics/eval.json": "eval", "metrics/train.json": "train"}


@dataclass(frozen=True)
class Experiment:
    """One DVC experiment: ``state`` is success, queued, running or failed; params and metrics
    under dotted keys (metrics prefixed ``eval.`` and ``train.``)."""

    name: str
    state: str
    timestamp: str
    params: dict[str, Any]
    metrics: dict[str, float]


def experiments(data: Any, where: str = "dvc exp show") -> list[Experiment]:
    """The experiments in parsed ``dvc exp show --json`` output, newest first.

    The workspace and the baseline commits are not experiments and are passed over.
    """
    if not isinstance(data, list):
        raise UserError(f"{where}: expected a JSON list of commits, got {type(data).__name__}; "
                        "is this dvc 3.x?")
    found = []
    for commit in data:
        for exp in (commit.get("experiments") or []) if isinstance(commit, dict) else []:
            rev = (exp.get("revs") or [{}])[0]
            payload = rev.get("data") or {}
            metrics: dict[str, float] = {}
            for file, prefix in METRIC_FILES.items():
                content = (payload.get("metrics") or {}).get(file) or {}
                if isinstance(content.get("data"), dict):
                    metrics.update(flat_numbers(content["data"], prefix + "."))
            state = "failed" if rev.get("error") else (exp.get("executor") or {}).get("state", "success")
            params = ((payload.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            found.append(Experiment(exp.get("name") or rev.get("name") or rev.get("rev", "?"), state,
                                    payload.get("timestamp") or "", flatten(params), metrics))
    found.sort(key=lambda e: e.timestamp, reverse=True)  # ISO times: newest first
    return found


def records(exps: list[Experiment], where: str) -> list[Record]:
    """Finished experiments with metrics, one per variant and seed (the newest)."""
    found, skipped = [], []
    for exp in exps:
        if exp.state != "success" or not exp.metrics:
            skipped.append(f"{exp.name} ({exp.state})")
            continue
        rec = record(exp.name, group(exp.params), exp.params.get("train.seed"),
                     exp.metrics, where)
        if rec:
            found.append(rec)
    if skipped:
        log.info("%s: left out %d unfinished or failed experiment(s): %s", where, len(skipped),
                 ", ".join(skipped))
    return latest_per_seed(found, where)


def exp_show(repo: Path, all_commits: bool = False) -> list[Experiment]:
    """Experiments of ``repo``'s HEAD commit (or of every commit)."""
    cmd = [dvc_executable(), "exp", "show", "--json", "--no-fetch", *(["-A"] if all_commits else [])]
    try:
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"{repo}: could not run dvc exp show ({err})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{repo}: dvc exp show failed: {last}; run it from a git+DVC project, "
                        "or pass --repo")
    try:
        data = json.loads(out.stdout or "[]")
    except json.JSONDecodeError as err:
        raise UserError(f"{repo}: dvc exp show printed no valid JSON ({err})") from None
    return experiments(data, where=f"DVC experiments in {repo.resolve()}")


def collect(repo: Path) -> list[Record]:
    """Finished DVC experiments of ``repo``'s HEAD commit."""
    return records(exp_show(repo), f"DVC experiments in {repo.resolve()}")
