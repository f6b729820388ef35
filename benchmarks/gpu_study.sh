#!/usr/bin/env bash
# The GPU study alone (benchmarks/gpu_study.py) with the device machine's limits in mind: no run
# starts after 420 s, and runs still going at 540 s are stopped, so the archive of what finished is
# written inside a 600 s command (on CUDA every run starts at once). Arguments pass through; later
# --budget-s and --stop-s win. The GPU hour's one command, the study packed by 480 s then the
# throughput benchmark and the files copied into $OUT, is benchmarks/gpu_hour.sh.
#
#   benchmarks/gpu_study.sh --data .gpu-data/cats-kaggle.zip --out /tmp/gpu-study
#   cp /tmp/gpu-study/study.tar.gz /tmp/gpu-study/study.generator-*.pt "$OUT"/
#
# Only torch, numpy and Pillow are assumed (tests/test_gpu_study.py runs it without PyYAML, MLflow,
# DVC, torchvision or tqdm).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_study --budget-s 420 --stop-s 540 "$@"
