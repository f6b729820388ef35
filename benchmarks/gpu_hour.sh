#!/usr/bin/env bash
# The GPU hour in one 600 s device command (benchmarks/gpu_hour.py): the whole study finished and
# packed by 480 s, the steady-state throughput benchmark until 570 s, then the archive, each arm's
# best generator (fp16), throughput.json and the log in --out, 8 files at most, and one summary.
# Options it does not know go to benchmarks/gpu_study.py.
#
#   device run, carry [".gpu-data"], timeout_s 600:
#     benchmarks/gpu_hour.sh --data .gpu-data/cats-kaggle.zip --out "$OUT"
#
# benchmarks/README.md, "GPU hour": the plan, the estimate, and how the data gets there. Only
# torch, numpy and Pillow are assumed (tests/test_gpu_study.py runs it without PyYAML, MLflow, DVC,
# torchvision or tqdm).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_hour "$@"
