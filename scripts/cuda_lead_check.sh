#!/usr/bin/env bash
# One device call: build, CUDA tests, op suite on the GPU stream, benches.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD:${PYTHONPATH:-}
BUILD_DIR=${BUILD_DIR:-/tmp/mmbuild-lead} bash scripts/cuda_check.sh build || exit 1
MLX_MARLIN_CUDA_POISON=1 timeout 300 python3 -m pytest -q tests/test_fp4_gemm_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log" | tail -8
if [ "${SUITE:-1}" = 1 ]; then
  MLX_MARLIN_TEST_DEVICE=gpu MLX_MARLIN_CUDA_POISON=1 timeout 300 python3 -m pytest -q tests/test_fp4_gemm.py tests/test_quant.py tests/test_plans.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_suite.log" | grep -E "passed|failed|FAILED|Error" | head -20
fi
if [ "${BENCH:-1}" = 1 ]; then
  timeout 200 python3 benchmarks/bench_op_overhead_cuda.py 2>&1 | tee "$OUT/overhead.log"
  timeout 300 python3 benchmarks/bench_gemm_cuda.py --M ${MS:-1,16,64,128,256,512,1024,2048} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
fi
