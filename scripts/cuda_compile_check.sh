#!/usr/bin/env bash
# Compile-only check of the CUDA sources (no GPU, no MLX CUDA build needed): nvcc
# compiles cpp/**/*.cu against the MLX headers that every wheel ships (the CPU wheel
# includes mlx/backend/cuda/*.h), for sm_80 and sm_90a, and prints the ptxas resource
# report (registers, spills).  For CI machines that have nvcc but MLX's CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
inc=$("$py" -c 'import mlx.core as mx, os; print(os.path.join(os.path.dirname(mx.__file__), "include"))')
out=${OUT_DIR:-build/cuda-check}
mkdir -p "$out"
for f in $(find cpp -name '*.cu'); do
  o="$out/$(basename "$f" .cu).o"
  echo "nvcc $f"
  nvcc -std=c++20 -O3 -diag-suppress=997 -lineinfo --expt-relaxed-constexpr -DMLX_MARLIN_CUDA=1 \
    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a \
    -Xptxas=-v -I cpp -I cpp/cuda/compat -I "$inc" -c "$f" -o "$o" 2>&1 | grep -E "error|warning|registers|spill|Compiling entry" | \
    sed -E 's/_ZN6marlin4cuda//' | grep -v "^$" || true
  test -f "$o"
done
cudainc=$(dirname "$(readlink -f "$(command -v nvcc)")")/../targets/x86_64-linux/include
nvinc=$("$py" -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], \"cu13\", \"include\"))" 2>/dev/null || true)
for f in $(find cpp/cuda -name '*.cpp'); do
  echo "c++ $f"
  nvcc -x c++ -std=c++20 -O2 -DMLX_MARLIN_CUDA=1 -DMLX_MARLIN_CUDA_SM90A=1 -I cpp -I cpp/cuda/compat -I "$inc" ${nvinc:+-Xcompiler=-idirafter,"$nvinc"} -c "$f" -o "$out/$(basename "$f" .cpp).o"
done
# The op files' CUDA-only branches (routes chosen when the stream is a CUDA GPU).
for f in $(grep -l 'MLX_MARLIN_CUDA' cpp/ops/*.cpp); do
  echo "c++ $f (MLX_MARLIN_CUDA)"
  nvcc -x c++ -std=c++20 -O2 -DMLX_MARLIN_CUDA=1 -I cpp -I "$inc" -c "$f" -o "$out/ops_$(basename "$f" .cpp).o"
done
echo "CUDA compile check: OK"
