#!/usr/bin/env bash
# Device-side, one call: build, every CUDA test with poisoned outputs, the whole op suite
# (mlx-lm layers and tiny models included) on the GPU stream, then the three op benchmarks
# against MLX.  After `source .device-mlx/b/activate.sh`, from the repository root; logs
# under $OUT.   STEPS="build cuda suite bench" (default all four) picks the parts.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_full_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
STEPS=${STEPS:-build cuda suite bench}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }
if has build; then
  BUILD_DIR=${BUILD_DIR:-/tmp/mmbuild-full} bash scripts/cuda_check.sh build > "$OUT/build_step.log" 2>&1 \
    || { tail -30 "$OUT/build_step.log"; exit 1; }
  stamp "$(grep -E '^commit|^build:' "$OUT/build_step.log" | tr '\n' ' ')"
fi
if has cuda; then
  MLX_MARLIN_CUDA_POISON=1 timeout ${CUDA_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider \
    tests/test_fp4_gemm_cuda.py tests/test_moe_cuda.py tests/test_attention_cuda.py > "$OUT/cuda_tests.log" 2>&1
  stamp "cuda tests: $(tail -1 "$OUT/cuda_tests.log")"; grep -E "^(FAILED|ERROR)" "$OUT/cuda_tests.log" | head -10
fi
if has suite; then
  MLX_MARLIN_TEST_DEVICE=gpu MLX_MARLIN_CUDA_POISON=1 timeout ${SUITE_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider \
    tests/test_fp4_gemm.py tests/test_moe.py tests/test_attention.py tests/test_quant.py tests/test_lm.py \
    tests/test_tiny_models.py tests/test_reliability.py tests/test_plans.py > "$OUT/gpu_suite.log" 2>&1
  stamp "gpu suite: $(tail -1 "$OUT/gpu_suite.log")"; grep -E "^(FAILED|ERROR)" "$OUT/gpu_suite.log" | head -15
fi
if has bench; then
  timeout 150 python3 benchmarks/bench_gemm_cuda.py --M ${MS:-1,16,2048} --json "$OUT/bench_gemm.json" > "$OUT/bench_gemm.log" 2>&1
  timeout 150 python3 benchmarks/bench_moe_cuda.py --json "$OUT/bench_moe.json" > "$OUT/bench_moe.log" 2>&1
  timeout 150 python3 benchmarks/bench_attention_cuda.py --json "$OUT/bench_attn.json" ${ATTN_ARGS:-} > "$OUT/bench_attn.log" 2>&1
  stamp "benchmarks done"; tail -n 12 "$OUT/bench_gemm.log" "$OUT/bench_moe.log" "$OUT/bench_attn.log"
fi
