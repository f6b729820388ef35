#!/usr/bin/env bash
# One prepared CUDA check, under 5 minutes: (a) bf16, channels_last and compile train to finite
# losses close to fp32, (b) training throughput against the course's loop, fp32 and bf16, (c) 3
# timed epochs per variant; then one table. Each part has its own time limit, and a part that fails
# or runs out of time leaves the rest running.
#
#   benchmarks/gpu_check.sh          on a CUDA machine; exits 2 with "no CUDA device" elsewhere
#   benchmarks/gpu_check.sh --cpu    dry run of every part on the CPU with tiny sizes
#   GPU_CHECK_OUT=$OUT benchmarks/gpu_check.sh    keep the JSON results in $OUT (default: a temp dir)
#
# Only torch, torchvision, numpy and Pillow are assumed: catgan.train and catgan.data.preprocess
# need no more (tests/test_train.py checks it); a failed import stops the script and is named.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
VENDOR=$(mktemp -d)  # the synthetic images
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

for module in catgan.train torchvision catgan.data.preprocess; do
  if ! "$PY" -c "import $module" 2>"$OUT/import.err"; then
    echo "cannot import $module: $(tail -n 1 "$OUT/import.err")"
    echo "these checks need torch, torchvision, numpy and Pillow"
    exit 3
  fi
done

if [ "${1:-}" = "--cpu" ]; then
  DEVICE=cpu
  CHECK=(--configs fp32,fp32+cl,bf16 --steps 2 --batch-size 4)
  BENCH=(--steps 2 --repeats 1 --batch-size 4 --variants fused --configs fp32,bf16 --steady)
  EPOCHS=(--configs fp32 --batch-size 8 --epoch-images 32)
  LIMITS=(300 300 300)
else
  if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device"
    exit 2
  fi
  DEVICE=cuda
  CHECK=()
  BENCH=(--configs fp32,bf16,bf16+cl --repeats 3)
  EPOCHS=(--configs fp32,bf16)
  LIMITS=(100 120 40)
fi

DATA=()  # drawn once for all three parts when the shared cat sample is not beside the repo
if [ ! -f ../shared/data/cats-sample.zip ]; then
  "$PY" -c "import sys; from pathlib import Path; from benchmarks import common
print('data:', common.prepare_images(None, Path(sys.argv[1]))[1])" "$VENDOR/data" || exit 1
  DATA=(--data "$VENDOR/data/synthetic")
fi
echo "== results in $OUT"
# This project's commit, or the content hash of its code where the copy has no .git of its own
# (git rev-parse here would name an enclosing repository's commit); torch, CUDA and the device.
"$PY" -m catgan.provenance --json "$OUT/provenance.json" --command "benchmarks/gpu_check.sh $*"
status=0
part() {  # part NAME LIMIT COMMAND...: run with a time limit, note a failure, carry on
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "!! $name: exit $rc$([ $rc -eq 124 ] && echo ' (time limit)')"
    status=1
  fi
}
part "a: precision/layout/compile vs fp32" "${LIMITS[0]}" \
  "$PY" -m benchmarks.gpu_check check --out "$OUT" --device "$DEVICE" "${DATA[@]}" "${CHECK[@]}"
part "b: throughput vs the course loop" "${LIMITS[1]}" \
  "$PY" -m benchmarks.train_throughput --device "$DEVICE" --json "$OUT/throughput.json" "${DATA[@]}" \
  "${BENCH[@]}"
part "c: 3 epochs" "${LIMITS[2]}" \
  "$PY" -m benchmarks.gpu_check epochs --out "$OUT" --device "$DEVICE" "${DATA[@]}" "${EPOCHS[@]}"
echo "== summary"
"$PY" -m benchmarks.gpu_check summary --out "$OUT"
exit $status
