#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer and runs the op
# tests under them (the Python interpreter itself is not instrumented, so the sanitizer
# runtimes are preloaded).
#   scripts/sanitize_tests.sh [pytest args]             CPU backend
#   scripts/sanitize_tests.sh --emulator [pytest args]  ops evaluated by the Metal kernels on
#       the emulator (MLX_MARLIN_METAL_EMULATOR): sanitizes our host code (encoders,
#       EmulatorLauncher); the emulator checks the kernels themselves (bounds, races).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
emulator=0
if [ "${1:-}" = "--emulator" ]; then emulator=1; shift; fi
build=build/sanitize
opts=(-DMLX_MARLIN_SANITIZE=ON)
if [ $emulator = 1 ]; then
  build=build/sanitize-emulator
  opts+=(-DMLX_MARLIN_METAL_EMULATOR=ON -DMLX_MARLIN_LTO=OFF)
fi
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${opts[@]}" \
  -DPython_EXECUTABLE="$(command -v "$py")" >/dev/null
cmake --build $build -j"${JOBS:-2}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r mlx_marlin "$stage/"
rm -f "$stage"/mlx_marlin/_ext*.so "$stage"/mlx_marlin/mlx_marlin_metal_emu.so
cp $build/_ext*.so "$stage/mlx_marlin/"
[ $emulator = 0 ] || cp $build/mlx_marlin_metal_emu.so "$stage/mlx_marlin/"
cxx=${CXX:-c++}
export LD_PRELOAD="$($cxx -print-file-name=libasan.so):$($cxx -print-file-name=libubsan.so)"
# Python and numpy allocate for the life of the process: leak reports would be noise.
# The emulator runs GPU threads on its own fiber stacks, which ASan's stack bookkeeping
# must not follow (detect_stack_use_after_return stays off, its default).
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
# Test paths given on the command line are relative to the repository.
args=()
for a in "$@"; do if [ -e "$a" ]; then args+=("$(realpath "$a")"); else args+=("$a"); fi; done
if [ ${#args[@]} -eq 0 ]; then
  if [ $emulator = 1 ]; then
    args=("$(realpath tests/test_fp4_gemm.py)" "$(realpath tests/test_attention.py)" "$(realpath tests/test_moe.py)")
  else
    args=("$(realpath tests)")
  fi
fi
cd "$stage"
[ $emulator = 0 ] || "$py" -c 'import mlx_marlin._ext as e; assert e._backend() == "metal-emulator", e._backend()'
"$py" -m pytest -q -p no:cacheprovider -k "not every_cpu_kernel_build and not memory_is_flat and not other_isa" \
  "${args[@]}"
