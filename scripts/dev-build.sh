#!/usr/bin/env bash
# Fast developer build: compiles convcore._core into the checkout (convcore/_core*.so) and the C++ tests.
# Usage: bash scripts/dev-build.sh [extra cmake args]   (BUILD_DIR defaults to build/dev)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD_DIR=${BUILD_DIR:-build/dev}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v $PY)" "$@" >/dev/null
cmake --build "$BUILD_DIR"
