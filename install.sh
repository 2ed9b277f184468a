#!/bin/sh
# Install into a virtual environment: sh install.sh [EXTRAS]    then: sh single_run.sh (the quick start)
#
# Makes .venv beside this file (kept if it exists) and installs the project there, editable, with its
# commands (imas-train, imas-eval, ...) in .venv/bin; single_run.sh uses .venv/bin/python when it exists.
# On a machine without an NVIDIA GPU (no working nvidia-smi) it first installs PyTorch's CPU build from
# https://download.pytorch.org/whl/cpu, a few hundred MB instead of several GB of CUDA libraries; where
# that index cannot be reached it says so and takes PyPI's build.
#   EXTRAS  optional extras, comma-separated: dev (tests, ruff), report (matplotlib), analysis (pandas)
#   TORCH=cpu|cuda|auto (environment; default auto) forces the CPU build, or PyPI's build, of torch
#   PYTHON  the interpreter that creates .venv (default python3; Python >= 3.10)
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-auto}
CPU_INDEX=https://download.pytorch.org/whl/cpu
start=$(date +%s)
case "$TORCH" in
    auto)
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TORCH=cuda; else TORCH=cpu; fi ;;
    cpu|cuda) ;;
    *) echo "error: TORCH must be cpu, cuda or auto, got '$TORCH'" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$TORCH" = cpu ] && ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=15)" 2>/dev/null; then
        echo "no NVIDIA GPU found: installing PyTorch's CPU build from $CPU_INDEX"
        .venv/bin/python -m pip install --quiet torch torchvision --index-url "$CPU_INDEX"
    else
        echo "warning: $CPU_INDEX cannot be reached; torch comes from PyPI (with CUDA libraries, several GB)" >&2
    fi
fi
TARGET=.
[ $# -gt 0 ] && TARGET=".[$1]"
.venv/bin/python -m pip install --quiet -e "$TARGET"
.venv/bin/python -c "import torch; print(f'torch {torch.__version__}', 'CPU build' if torch.version.cuda is None else f'CUDA {torch.version.cuda} build', '(a GPU is visible)' if torch.cuda.is_available() else '(no GPU visible)')"
echo "installed in .venv in $(( $(date +%s) - start )) s; next: sh single_run.sh (the quick start), or . .venv/bin/activate for the imas-* commands"
