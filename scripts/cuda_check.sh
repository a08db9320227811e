#!/usr/bin/env bash
# Device-side build + correctness + timing in one go (for the lent GPU machine).
# Expects MLX-CUDA activated (source .device-mlx/b/activate.sh) and runs from the
# repository root (or a copy of it).  Writes logs/results under $OUT when set.
#   bash scripts/cuda_check.sh [build|test|bench|all]   (default all)
# BUILD_DIR (default /tmp/mmbuild) keeps builds of different trees apart; TESTS names the
# pytest targets of the test step (default tests/test_fp4_gemm_cuda.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check_out}; mkdir -p "$OUT"
what=${1:-all}
BUILD=${BUILD_DIR:-/tmp/mmbuild}
NV=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
echo "commit: $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null)"
if ! python3 -c 'import nanobind,sys; sys.exit(0 if nanobind.__version__.startswith("3.") else 1)' 2>/dev/null; then
  echo "installing nanobind 3.x from .whl"; python3 -m pip install -q --no-index --no-deps --target /tmp/nb .whl/nanobind-*.whl
  export PYTHONPATH=/tmp/nb:$PYTHONPATH
fi
python3 -c 'import nanobind; print("nanobind", nanobind.__version__)'
if [ "$what" = build ] || [ "$what" = all ]; then
  t0=$(date +%s)
  cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v python3)" \
    -DCUDNN_INCLUDE_PATH=$NV/cudnn/include -DCUDNN_LIBRARY_PATH=$NV/cudnn/lib \
    -DCMAKE_CUDA_ARCHITECTURES=${ARCHS:-90a} -DMLX_MARLIN_PTXAS_VERBOSE=ON -DMLX_MARLIN_LTO=OFF > "$OUT/cmake.log" 2>&1 \
    || { tail -30 "$OUT/cmake.log"; exit 1; }
  grep "mlx_marlin:" "$OUT/cmake.log"
  cmake --build $BUILD -j16 > "$OUT/build.log" 2>&1 || { grep -B2 -A10 -m3 "error" "$OUT/build.log"; tail -20 "$OUT/build.log"; exit 1; }
  grep -A2 "fp4_gemm_mma" "$OUT/build.log" | grep -E "Used|spill" | sort | uniq -c
  cp $BUILD/_ext*.so mlx_marlin/
  echo "build: $(( $(date +%s) - t0 )) s"
fi
if [ "$what" = test ] || [ "$what" = all ]; then
  MLX_MARLIN_CUDA_POISON=1 PYTHONPATH=$PWD:${PYTHONPATH:-} timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -x ${TESTS:-tests/test_fp4_gemm_cuda.py} -p no:cacheprovider 2>&1 | tail -25
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 benchmarks/copy_bandwidth_cuda.py
  PYTHONPATH=$PWD:${PYTHONPATH:-} timeout 400 python3 benchmarks/bench_gemm_cuda.py --json "$OUT/bench.json" ${BENCH_ARGS:-}
fi
