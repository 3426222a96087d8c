#!/usr/bin/env bash
# Create (or reuse) .venv and install mmreward into it, building the C++ extension.
#   MMREWARD_EXTRAS=dev,text  choose extras (default: dev)
#   MMREWARD_VENV=path        venv location (default: .venv in the repository)
# torch==2.13.0 is installed first, on its own: a bare `torch` requirement would pull a multi-GB
# CUDA build on machines whose local wheel is the CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MMREWARD_VENV:-.venv}
EXTRAS=${MMREWARD_EXTRAS:-dev}
PY=${PYTHON:-python3}
# Offscreen MuJoCo rendering (robotics extra) needs EGL + Mesa from the system.
if [[ ",$EXTRAS," == *",robotics,"* ]] && ! ldconfig -p | grep -q "libEGL.so.1"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing EGL/Mesa for offscreen rendering"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1 >/dev/null
  else
    echo "[setup] warning: libEGL.so.1 not found; install libegl1 libegl-mesa0 libgl1 for MuJoCo rendering" >&2
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "torch==2.13.0"
$PIP install "setuptools>=64" wheel ninja
echo "[setup] installing mmreward[$EXTRAS] (builds mmreward._C)"
# --no-build-isolation: compile against the torch installed above.
$PIP install --no-build-isolation -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",serve,"* || ",$EXTRAS," == *",serve-ray,"* ]]; then
  # OpenRLHF's own client code, for the protocol test only: its real dependencies (vLLM, DeepSpeed) are
  # not needed to import the client, so it goes in without them
  $PIP install --no-deps "openrlhf==0.11.2" pylatexenc
fi
