#!/usr/bin/env bash
# One device call for fp4_gemm's CUDA path: build, CUDA tests, the op suite on the GPU
# stream, per-op overhead, decode variants under ncu, op benchmarks.  Logs into $OUT.
#   SUITE=0 / BENCH=0 skip those parts; MS=1,16,... picks the bench rows;
#   VARIANTS="1 5 6" times those decode variants (kernel only, ncu) at M = 1.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD:${PYTHONPATH:-}
OUT=${OUT:-/tmp/cuda_lead_out}; mkdir -p "$OUT"
BUILD_DIR=${BUILD_DIR:-/tmp/mmbuild-lead} bash scripts/cuda_check.sh build || exit 1
MLX_MARLIN_CUDA_POISON=1 timeout 300 python3 -m pytest -q tests/test_fp4_gemm_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log" | tail -4
if [ "${SUITE:-1}" = 1 ]; then
  MLX_MARLIN_TEST_DEVICE=gpu MLX_MARLIN_CUDA_POISON=1 timeout 300 python3 -m pytest -q tests/test_fp4_gemm.py tests/test_quant.py tests/test_plans.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_suite.log" | grep -E "passed|failed|FAILED|Error" | head -20
fi
for v in ${VARIANTS:-}; do
  MLX_MARLIN_CUDA_DECODE=$v timeout 60 ncu --clock-control none -k regex:fp4_gemv -s 2 -c 1 --metrics gpu__time_duration.sum,dram__bytes_read.sum python3 benchmarks/ncu_gemm_cuda.py 2>&1 | grep -E "fp4_gemv|duration|bytes_read" | sed "s/^/variant $v: /" | tee -a "$OUT/variants.log"
done
if [ "${BENCH:-1}" = 1 ]; then
  timeout 120 python3 benchmarks/bench_op_overhead_cuda.py 2>&1 | tee "$OUT/overhead.log"
  timeout 300 python3 benchmarks/bench_gemm_cuda.py --M ${MS:-1,16,64,96,128,256,2048} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
fi
