#!/usr/bin/env bash
# Sets up .venv (numpy, pytest, hypothesis, build tools, and the peers: torch 2.13 CPU, onnx, onnxruntime), builds
# convcore into the checkout, and runs the whole test suite: C++ tests (ctest) then pytest. Extra arguments go to
# pytest. Environment: CONVCORE_HYPOTHESIS_PROFILE=ci for >= 1000 examples per property; WITH_PEERS=0 skips installing
# the peers (torch for the parity tests; torch, onnx and onnxruntime for the benchmark networks' tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" numpy pybind11 cmake ninja pytest hypothesis tqdm safetensors matplotlib atheris
if [ "${WITH_PEERS:-1}" = "1" ]; then
  "${PIP[@]}" torch==2.13.0 onnx==1.23.2 onnxruntime==1.32.0
fi

export PATH="$PWD/.venv/bin:$PATH"
BUILD_DIR=build/test PYTHON=.venv/bin/python bash scripts/dev-build.sh
ctest --test-dir build/test --output-on-failure --no-tests=error

set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: the suite is missing or the selection matched nothing" >&2
  exit 1
fi
exit "$status"
