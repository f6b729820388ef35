#!/usr/bin/env bash
# The GPU study (benchmarks/gpu_study.py, whose docstring says how to carry the data there) with
# the device machine's limits in mind: no run starts after 420 s, so the archive is written well
# inside a 600 s command. Arguments pass through; a later --budget-s wins.
#
#   benchmarks/gpu_study.sh --data .gpu-data/cats-kaggle.zip --out /tmp/gpu-study
#   cp /tmp/gpu-study/study.tar.gz "$OUT"/
#
# Only torch, numpy and Pillow are assumed (tests/test_gpu_study.py runs it without PyYAML, MLflow,
# DVC, torchvision or tqdm).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_study --budget-s 420 "$@"
