#!/usr/bin/env bash
# Device-side, one call, no MLX staging: builds and runs the standalone CUDA labs
# (benchmarks/attention_lab_cuda.cu, benchmarks/gemv_lab_cuda.cu) for sm_90a, logs under
# $OUT.  LABS="attention gemv" picks them (default both); extra environment passes
# through (LAB_DECODE_ONLY=1, LAB_NO_MERGE=1 for the attention lab).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_labs_out}; mkdir -p "$OUT"
LABS=${LABS:-attention gemv}
pids=()
for lab in $LABS; do
  nvcc -O3 -std=c++17 --expt-relaxed-constexpr -arch=sm_90a -Icpp "benchmarks/${lab}_lab_cuda.cu" \
    -o "/tmp/${lab}_lab" > "$OUT/${lab}_build.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc = 0 ] || { tail -20 "$OUT"/*_build.log; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
for lab in $LABS; do
  "/tmp/${lab}_lab" > "$OUT/${lab}.log" 2>&1 || rc=1
  # Failed checks first, then every timing line.
  grep -E "FAIL|MISMATCH|error" "$OUT/${lab}.log" | head -20
  grep -vE "^check .* ok$|^  plan \(" "$OUT/${lab}.log"
done
exit $rc
