#!/usr/bin/env bash
# Incremental in-tree build for development: puts mlx_marlin/_ext*.so next to the
# Python sources so `python -m pytest` from the repo root tests this checkout
# (several worktrees can each have their own build side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -f build/dev/build.ninja ]; then
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$py")" "$@" >/dev/null
fi
cmake --build build/dev -j"${JOBS:-2}"
cp build/dev/_ext*.so mlx_marlin/
