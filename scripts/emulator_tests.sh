#!/usr/bin/env bash
# Builds the extension with MLX_MARLIN_METAL_EMULATOR=ON (the ops wired to Metal kernels
# -- fp4_gemm, moe_gemm, attention, moe_route, moe_mlp -- evaluate through metal/*.metal on the
# Metal-on-CPU emulator, checked build: bounds and race detection) into build/emulator,
# stages the package with the kernel module beside the extension, and runs tests against it.
# Usage: scripts/emulator_tests.sh [pytest args]   (default: the op, mlx-lm integration and
#        Metal kernel tests)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -f build/emulator/build.ninja ]; then
  cmake -S . -B build/emulator -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLX_MARLIN_METAL_EMULATOR=ON \
    -DMLX_MARLIN_LTO=OFF -DPython_EXECUTABLE="$(command -v "$py")" >/dev/null
fi
cmake --build build/emulator -j"${JOBS:-2}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r mlx_marlin "$stage/"
rm -f "$stage"/mlx_marlin/_ext*.so "$stage"/mlx_marlin/mlx_marlin_metal_emu.so
cp build/emulator/_ext*.so build/emulator/mlx_marlin_metal_emu.so "$stage/mlx_marlin/"
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
args=()
for a in "$@"; do if [ -e "$a" ]; then args+=("$(realpath "$a")"); else args+=("$a"); fi; done
[ ${#args[@]} -gt 0 ] || args=("$(realpath tests/test_fp4_gemm.py)" "$(realpath tests/test_attention.py)" \
  "$(realpath tests/test_moe.py)" "$(realpath tests/test_lm.py)" "$(realpath tests/test_metal_gemm.py)" \
  "$(realpath tests/test_metal_moe.py)" "$(realpath tests/test_metal_moe_route.py)" \
  "$(realpath tests/test_metal_attention.py)")
cd "$stage"
"$py" -c 'import mlx_marlin._ext as e; b = e._backend(); assert b == "metal-emulator", b; print("backend:", b, "| module:", e._emulator_module(), "| checked:", e._emulator_checked())'
"$py" -m pytest -q -p no:cacheprovider "${args[@]}"
