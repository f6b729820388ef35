"""What a training run is tagged with in MLflow: variant, seed, code and data versions, its study."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from catgan.config import project_root

STUDY_TAG, ROLE_TAG = "catgan.study", "catgan.role"  # a study's parent run has role "study"
ARM_TAG = "catgan.arm"  # the study arm (catgan/study/arms.py), where `catgan study` set tracking.arm


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run_tags(params, data_hash: str) -> dict:
    """Named after the DVC experiment where there is one, so that runs can be told apart."""
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    tags = {"variant": params.model.variant, "seed": params.train.seed, "git_commit": git_commit(),
            "dvc_exp_name": exp_name, "data_hash": data_hash,
            "mlflow.runName": exp_name or f"{params.model.variant}-seed{params.train.seed}"}
    if params.tracking.study:
        tags[STUDY_TAG] = params.tracking.study
    if params.tracking.arm:
        tags[ARM_TAG] = params.tracking.arm
    return tags
