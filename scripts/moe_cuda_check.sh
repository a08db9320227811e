#!/usr/bin/env bash
# Device-side check of the CUDA MoE ops in one go: build, tests (poisoned outputs),
# the MoE benchmark, A/B runs and Nsight Compute kernel times.  Expects MLX-CUDA
# activated (source .device-mlx/b/activate.sh); logs under $OUT.
#   BUILD_DIR=/tmp/mmbuild-moe bash scripts/moe_cuda_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/moe_check_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
BUILD_DIR=${BUILD_DIR:-/tmp/mmbuild-moe} bash scripts/cuda_check.sh build > "$OUT/build_step.log" 2>&1 || { tail -30 "$OUT/build_step.log"; exit 1; }
tail -3 "$OUT/build_step.log"
grep -A2 "moe_gemm_kernel" "$OUT/build.log" | grep -E "spill" | sort | uniq -c
{
  MLX_MARLIN_CUDA_POISON=1 timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q tests/test_moe_cuda.py -p no:cacheprovider
  MLX_MARLIN_TEST_DEVICE=gpu MLX_MARLIN_CUDA_POISON=1 timeout 120 python3 -m pytest -q tests/test_moe.py -p no:cacheprovider
  [ -n "${FP4_TESTS:-}" ] && MLX_MARLIN_CUDA_POISON=1 timeout 150 python3 -m pytest -q tests/test_fp4_gemm_cuda.py -p no:cacheprovider
} > "$OUT/tests.log" 2>&1
grep -E "passed|failed|^FAILED|Error" "$OUT/tests.log" | head -20
timeout ${BENCH_TIMEOUT:-200} python3 benchmarks/bench_moe_cuda.py --json "$OUT/bench_moe.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
grep -E "^moe_|Error" "$OUT/bench.log"
{
  echo "== A/B: MLX_MARLIN_CUDA_POOL=default"
  MLX_MARLIN_CUDA_POOL=default timeout 60 python3 benchmarks/bench_moe_cuda.py --skip-mlp --tokens 1 64 --sets 1
  echo "== A/B: MLX_MARLIN_CUDA_MOE=prefill"
  MLX_MARLIN_CUDA_MOE=prefill timeout 60 python3 benchmarks/bench_moe_cuda.py --skip-mlp --tokens 64 --sets 1
  echo "== ncu"
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  [ -n "$NCU" ] && timeout ${NCU_TIMEOUT:-120} "$NCU" --clock-control none -k regex:moe_ \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum python3 benchmarks/ncu_moe_cuda.py 2>&1 |
    grep -E "^T=|^  [a-z_]+.*moe_|gpu__time_duration|dram__bytes_read" |
    awk '/^T=/{print; next} /moe_/{n=$1; sub(/<.*/, "", n)} /gpu__time/{t=$NF" "$(NF-1)} /dram__bytes/{printf "  %s %s %s %s\n", n, t, $NF, $(NF-1)}'
} > "$OUT/extra.log" 2>&1
grep -E "^moe_gemm|^==|^T=|^  moe" "$OUT/extra.log"
