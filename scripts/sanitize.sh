#!/usr/bin/env bash
# Memory-safety run: builds convcore with AddressSanitizer + UndefinedBehaviorSanitizer into the checkout and runs
# the C++ tests and the pytest suite under them (ASan runtime preloaded into Python, leak checks off: CPython's
# allocations are not ours). Any report fails the run. Needs .venv from scripts/test.sh. Extra args go to pytest.
# pytest captures Python's output only (--capture=sys): a sanitizer's report is written to file descriptor 2 as the
# process ends, which pytest's default capture of the descriptors would swallow.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
rm -f convcore/_core*.so
BUILD_DIR=build/asan PYTHON=.venv/bin/python bash scripts/dev-build.sh -DCONVCORE_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure
status=0
LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)" \
  .venv/bin/python -m pytest -q -p no:cacheprovider --capture=sys "$@" || status=$?
# Put the normal build back so the checkout is left as scripts/test.sh leaves it.
rm -f convcore/_core*.so
BUILD_DIR=build/test PYTHON=.venv/bin/python bash scripts/dev-build.sh >/dev/null
exit "$status"
