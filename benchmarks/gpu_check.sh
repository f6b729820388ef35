#!/usr/bin/env bash
# One prepared CUDA check, 4 minutes at most: (a) bf16, channels_last and compile train to finite
# losses close to fp32, (b) steady-state training throughput and TFLOP/s against the course's loop,
# fp32 and bf16, (c) 3 timed epochs per variant, (d) when its whole limit still fits, the same
# throughput with torch.compile; then one table. Each part has its own time limit, cut to what is
# left of the budget, and a part that fails or runs out of time leaves the rest running.
#
#   benchmarks/gpu_check.sh          on a CUDA machine; exits 2 with "no CUDA device" elsewhere
#   benchmarks/gpu_check.sh --cpu    dry run of every part on the CPU with tiny sizes
#   GPU_CHECK_OUT=$OUT benchmarks/gpu_check.sh    keep the JSON results in $OUT (default: a temp dir)
#
# Only torch, torchvision, numpy and Pillow are assumed: catgan.training.loop and catgan.data.preprocess
# need no more (tests/test_train.py checks it); a failed import stops the script and is named.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
VENDOR=$(mktemp -d)  # the synthetic images
trap 'rm -rf "$VENDOR"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Parts start only while the clock ($SECONDS) is under this, and each ends by it; the summary takes a
# few seconds more, so the whole stays within 4 minutes.
BUDGET=${GPU_CHECK_BUDGET_S:-225}

# One interpreter for all three: each start imports torch, seconds out of the budget.
if ! "$PY" -c "import catgan.training.loop, torchvision, catgan.data.preprocess" 2>"$OUT/import.err"; then
  echo "cannot import: $(tail -n 1 "$OUT/import.err")"
  echo "these checks need torch, torchvision, numpy and Pillow"
  exit 3
fi

if [ "${1:-}" = "--cpu" ]; then
  DEVICE=cpu
  CHECK=(--configs fp32,fp32+cl,bf16 --steps 2 --batch-size 4)
  BENCH=(--warmup 1 --steps 2 --repeats 1 --batch-size 4 --variants fused --configs fp32,bf16)
  EPOCHS=(--configs fp32 --batch-size 8 --epoch-images 32)
  COMPILED=(--warmup 1 --steps 2 --repeats 1 --batch-size 4 --variants fused --configs fp32,fp32+compile
            --no-reference)
  LIMITS=(300 300 300 300)
  BUDGET=${GPU_CHECK_BUDGET_S:-1200}
else
  DEVICE=cuda
  CHECK=()
  # 10 warm-up + 3 x 40 timed steps per loop; README "GPU (gpu_check.sh)" has the time estimate.
  BENCH=(--configs fp32,bf16,bf16+cl)
  EPOCHS=(--configs fp32,bf16)
  # Compiling costs tens of seconds per variant, so (b) leaves it out and (d) runs it on the
  # baseline alone, against the uncompiled config the study trains with.
  COMPILED=(--variants baseline --configs bf16+cl,bf16+cl+compile --no-reference)
  LIMITS=(80 90 40 75)
fi
"$PY" -m benchmarks.gpu_check header --out "$OUT" --device "$DEVICE" \
  --command "benchmarks/gpu_check.sh $*" || exit $?

DATA=()  # drawn once for all parts when the shared cat sample is not beside the repo
if [ ! -f ../shared/data/cats-sample.zip ]; then
  "$PY" -c "import sys; from pathlib import Path; from benchmarks import common
print('data:', common.prepare_images(None, Path(sys.argv[1]))[1])" "$VENDOR/data" || exit 1
  DATA=(--data "$VENDOR/data/synthetic")
fi
status=0
part() {  # part NAME LIMIT COMMAND...: run within LIMIT and the budget, note a failure, carry on
  local name=$1 limit=$2 left=$((BUDGET - SECONDS))
  shift 2
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -le 0 ]; then
    echo "!! $name: not started, the ${BUDGET}s budget is spent"
    status=1
    return
  fi
  echo "== $name (limit ${limit}s, at ${SECONDS}s)"
  timeout --kill-after=5 "$limit" "$@"
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
if [ $((BUDGET - SECONDS)) -ge "${LIMITS[3]}" ]; then
  part "d: throughput with torch.compile" "${LIMITS[3]}" \
    "$PY" -m benchmarks.train_throughput --device "$DEVICE" --json "$OUT/compile.json" "${DATA[@]}" \
    "${COMPILED[@]}"
else
  echo "== d: throughput with torch.compile: skipped, $((BUDGET - SECONDS))s of the budget left," \
    "needs ${LIMITS[3]}s"
fi
echo "== summary (at ${SECONDS}s)"
"$PY" -m benchmarks.gpu_check summary --out "$OUT"
exit $status
