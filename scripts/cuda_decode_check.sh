#!/usr/bin/env bash
# Device-side: build, full CUDA tests, decode-variant op times, baselines, ncu kernel
# times.  After `source .device-mlx/b/activate.sh`, from the repository root.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
bash scripts/cuda_check.sh build 2>&1 | tee "$OUT/build_summary.txt" | grep -v "^ *[0-9]* *ptxas" | tail -8
grep -A2 "fp4_gemv" "$OUT/build.log" | grep -E "Used|spill" | sort | uniq -c | tee -a "$OUT/build_summary.txt" | head -12
ls mlx_marlin/_ext*.so >/dev/null || exit 1
if [ "${SKIP_TEST:-0}" != 1 ]; then
  MLX_MARLIN_CUDA_POISON=1 timeout 300 python3 -m pytest -q -x tests/test_fp4_gemm_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/test.log" | tail -6
fi
timeout 200 python3 benchmarks/bench_decode_cuda.py --variants ${VARIANTS:-mma,0,1,2,3,4} 2>&1 | tee "$OUT/decode.log"
timeout 200 python3 benchmarks/bench_gemm_cuda.py --M 1,4,16 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
for v in ${NCU_VARIANTS:-mma 0 1 2 3 4}; do
  MLX_MARLIN_CUDA_DECODE=$v timeout 120 ncu --clock-control none -k regex:fp4_gem --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    python3 benchmarks/bench_decode_cuda.py --ncu --variants $v > "$OUT/ncu_$v.log" 2>&1
  echo "ncu variant $v (per launch: kernel-us DRAM-read):"
  grep -E "^  [a-z].*fp4_gem|gpu__time_duration|dram__bytes_read" "$OUT/ncu_$v.log" | awk '/fp4_gem/{n=($0 ~ /gemv/)?"gemv":"mma"} /gpu__time/{t=$NF" "$(NF-1)} /dram__bytes/{printf "%s %s %s %s; ", n, t, $NF, $(NF-1)} END{print ""}'
done
