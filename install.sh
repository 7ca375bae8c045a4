#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (idempotent): LibreOffice (the formula oracle),
# PyTorch (the CPU wheel when one is on disk, so pip does not fetch a multi-GB CUDA build), then xlmnist
# with its test extra. Run from the repository root: bash install.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# LibreOffice Calc (the formula oracle and the live test bed of the Calc extension), its Python macros,
# Xvfb for the GUI test, PDF -> PNG for the rendered previews. libreoffice-calc (not -nogui: the GUI test
# needs a window) replaces libreoffice-calc-nogui where that is installed.
if ! command -v soffice >/dev/null 2>&1 || ! [ -f /usr/lib/libreoffice/program/pythonscript.py ] \
   || ! command -v xvfb-run >/dev/null 2>&1 || ! command -v pdftoppm >/dev/null 2>&1 \
   || ! [ -f /usr/lib/libreoffice/program/libvclplug_genlo.so ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends libreoffice-calc libreoffice-script-provider-python \
    python3-uno fonts-dejavu-core fonts-liberation2 xvfb xauth x11-apps imagemagick poppler-utils >/dev/null
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  # a CPU build is all the tests need; CUDA users install their own torch first
  "$PY" -m pip install -q "torch==2.13.0" 2>/dev/null || "$PY" -m pip install -q torch
fi

"$PY" -m pip install -q -e ".[test]"
echo "xlmnist installed: $("$PY" -c 'import xlmnist, torch; print(xlmnist.__version__, "torch", torch.__version__)')"
