#!/usr/bin/env bash
# Device-side, one go: build, the CUDA attention tests (poisoned outputs), the attention
# op suite on the GPU stream, and the benchmark against MLX's sdpa.  After
# `source .device-mlx/b/activate.sh`, from the repository root; logs under $OUT.
#   TESTS=... (default: both suites)  BENCH_ARGS=... (e.g. --configs default,4)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
bash scripts/cuda_check.sh build > "$OUT/build_summary.txt" 2>&1
tail -3 "$OUT/build_summary.txt"
grep -A2 "attention_mma" "$OUT/build.log" | grep -E "Used|spill" | sed -E 's/ptxas info *: //' | sort | uniq -c | head -12
ls mlx_marlin/_ext*.so >/dev/null || exit 1
if [ "${SKIP_TEST:-0}" != 1 ]; then
  MLX_MARLIN_CUDA_POISON=1 timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -x tests/test_attention_cuda.py -p no:cacheprovider \
    > "$OUT/test_cuda.log" 2>&1; echo "test_attention_cuda: $(tail -1 "$OUT/test_cuda.log")"
  grep -E "^(FAILED|ERROR)|Error|assert" "$OUT/test_cuda.log" | head -8
  MLX_MARLIN_TEST_DEVICE=gpu MLX_MARLIN_CUDA_POISON=1 timeout 150 python3 -m pytest -q tests/test_attention.py -p no:cacheprovider \
    > "$OUT/test_gpu.log" 2>&1; echo "test_attention (gpu): $(tail -1 "$OUT/test_gpu.log")"
  grep -E "^(FAILED|ERROR)" "$OUT/test_gpu.log" | head -8
fi
timeout ${BENCH_TIMEOUT:-150} python3 benchmarks/bench_attention_cuda.py --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
if [ "${NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
  # Kernel times alone (no MLX per-op overhead): ours and MLX's, each case run twice.
  timeout ${NCU_TIMEOUT:-150} ncu --clock-control none --metrics gpu__time_duration.sum \
    python3 benchmarks/bench_attention_cuda.py --ncu ${BENCH_ARGS:-} > "$OUT/ncu.log" 2>&1
  awk '/ncu case done/ {print} /, Context/ {n=substr($0,3,index($0,"(")-3)} /gpu__time_duration/ {printf "   %-70s %s %s\n", substr(n,1,70), $(NF-1), $NF}' "$OUT/ncu.log" \
    | grep -v -E "copy|fill|arange|Random|random|astype" | uniq -c | tail -${NCU_LINES:-40}
fi
