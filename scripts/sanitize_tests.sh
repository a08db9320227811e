#!/usr/bin/env bash
# Builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer and runs the CPU
# op tests under them (the Python interpreter itself is not instrumented, so the
# sanitizer runtimes are preloaded).  Usage: scripts/sanitize_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLX_MARLIN_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v "$py")" >/dev/null
cmake --build build/sanitize -j"${JOBS:-2}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r mlx_marlin "$stage/"
rm -f "$stage"/mlx_marlin/_ext*.so
cp build/sanitize/_ext*.so "$stage/mlx_marlin/"
cxx=${CXX:-c++}
export LD_PRELOAD="$($cxx -print-file-name=libasan.so):$($cxx -print-file-name=libubsan.so)"
# Python and numpy allocate for the life of the process: leak reports would be noise.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
# Test paths given on the command line are relative to the repository.
args=()
for a in "$@"; do if [ -e "$a" ]; then args+=("$(realpath "$a")"); else args+=("$a"); fi; done
[ ${#args[@]} -gt 0 ] || args=("$(realpath tests)")
cd "$stage"
"$py" -m pytest -q -p no:cacheprovider -k "not every_cpu_kernel_build and not memory_is_flat" "${args[@]}"
