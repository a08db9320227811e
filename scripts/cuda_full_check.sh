#!/usr/bin/env bash
# Device-side, one call: build, every CUDA test with poisoned outputs, the whole op suite
# (mlx-lm layers and tiny models included) on the GPU stream, then the three op benchmarks
# against MLX.  After `source .device-mlx/b/activate.sh`, from the repository root; logs
# under $OUT.   STEPS="ceil build cuda suite bench steady ncu" picks the parts (default: all but
# ncu); with PACK=1 the logs end up in $OUT/logs.tgz alone (the device tool returns at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_full_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
STEPS=${STEPS:-ceil build cuda suite bench}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }
if has ceil; then
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
  # The memory ceiling: a 1 GiB device-to-device copy, bytes read + written.
  python3 benchmarks/copy_bandwidth_cuda.py
fi
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
    tests/test_tiny_models.py tests/test_reliability.py tests/test_plans.py tests/test_dense_linear.py tests/test_affine_linear.py > "$OUT/gpu_suite.log" 2>&1
  stamp "gpu suite: $(tail -1 "$OUT/gpu_suite.log")"; grep -E "^(FAILED|ERROR)" "$OUT/gpu_suite.log" | head -15
fi
if has bench; then
  timeout 150 python3 benchmarks/bench_gemm_cuda.py --M ${MS:-1,16,2048} --json "$OUT/bench_gemm.json" > "$OUT/bench_gemm.log" 2>&1
  timeout 150 python3 benchmarks/bench_moe_cuda.py --json "$OUT/bench_moe.json" > "$OUT/bench_moe.log" 2>&1
  timeout 150 python3 benchmarks/bench_attention_cuda.py --json "$OUT/bench_attn.json" ${ATTN_ARGS:-} > "$OUT/bench_attn.log" 2>&1
  stamp "benchmarks done"; tail -n 12 "$OUT/bench_gemm.log" "$OUT/bench_moe.log" "$OUT/bench_attn.log"
fi
if has steady; then
  # Decode ops in chains of 400 (MLX's 20-op graphs overlap the host's recording with the
  # kernels, as in a model's forward pass) instead of 40.
  timeout 150 python3 benchmarks/bench_gemm_cuda.py --M 1,16 --calls 400 --sets 8 --json "$OUT/bench_gemm_steady.json" > "$OUT/bench_gemm_steady.log" 2>&1
  timeout 120 python3 benchmarks/bench_attention_cuda.py --prefill "" --decode-calls 400 --json "$OUT/bench_attn_steady.json" > "$OUT/bench_attn_steady.log" 2>&1
  stamp "steady-state benchmarks done"; tail -n 6 "$OUT/bench_gemm_steady.log" "$OUT/bench_attn_steady.log"
fi
if has ncu; then
  # Kernel times without MLX's dispatch, and the decode kernel's per-instruction counts.
  timeout 200 ncu --clock-control none -k "regex:${NCU_KERNELS:-fp4_gemv|fp4_gemm}" \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,smsp__inst_executed.sum \
    python3 benchmarks/ncu_gemm_cuda.py > "$OUT/ncu_times.log" 2>&1
  grep -E "fp4_gemv|gpu__time|dram__bytes|inst_executed" "$OUT/ncu_times.log" | head -40
  timeout 200 ncu --clock-control none -k regex:fp4_gemv -c 1 --section SourceCounters --page source \
    --print-source sass --csv python3 benchmarks/ncu_gemm_cuda.py > "$OUT/gemv_sass.csv" 2>&1
  stamp "ncu done ($(wc -l < "$OUT/gemv_sass.csv") lines of SASS counts)"
fi
if [ "${PACK:-0}" = 1 ]; then
  # Only the archive stays: the device tool drops every file past the eighth.
  (cd "$OUT" && tar czf /tmp/logs.tgz ./*.log ./*.json ./*.csv 2>/dev/null; rm -f ./*.log ./*.json ./*.csv; mv /tmp/logs.tgz .)
fi
