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
[ -n "${SKIP_EXTRA:-}" ] && exit 0
{
  for v in decode_u3 decode_u4; do
    echo "== A/B: MLX_MARLIN_CUDA_MOE=$v"
    MLX_MARLIN_CUDA_MOE=$v timeout 60 python3 benchmarks/bench_moe_cuda.py --tokens 1 64 --sets 1
  done
  echo "== A/B: MLX_MARLIN_CUDA_MOE_DIRECT=0"
  MLX_MARLIN_CUDA_MOE_DIRECT=0 timeout 60 python3 benchmarks/bench_moe_cuda.py --tokens 1 --sets 1
} > "$OUT/extra.log" 2>&1
grep -E "^moe_|^==" "$OUT/extra.log"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout ${NCU_TIMEOUT:-120} "$NCU" --clock-control none -k regex:moe_ --csv \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum python3 benchmarks/ncu_moe_cuda.py > "$OUT/ncu.csv" 2>&1
  python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, mi, ui, vi, ii = (hdr.index(c) for c in ("Kernel Name", "Metric Name", "Metric Unit", "Metric Value", "ID"))
by = {}
for r in rows:
    by.setdefault(r[ii], {"name": r[ki].split("<")[0].split("(")[0].replace("void ", "").split("::")[-1]})[r[mi]] = r[vi] + " " + r[ui]
for i, d in sorted(by.items(), key=lambda kv: int(kv[0])):
    print(f"ncu {i:>3} {d['name']:<20} {d.get('gpu__time_duration.sum', '?'):>14} {d.get('dram__bytes_read.sum', '?'):>16}")
PY
fi
