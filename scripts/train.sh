#!/usr/bin/env bash
# The main job from a fresh Debian/Ubuntu machine: installs Fashion-MNIST (Debian package dataset-fashion-mnist),
# installs convcore with its training extras into .venv, and trains LeNet-5 (`convcore train`; extra arguments
# are passed on, e.g. --epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${CONVCORE_DATA:-}" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check ".[train,viz]"
exec .venv/bin/convcore train "$@"
