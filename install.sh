#!/bin/sh
# Install into a virtual environment: sh install.sh [EXTRAS]    then: sh single_run.sh (the quick start)
#
# Makes .venv beside this file (kept if it exists) and installs the project there, editable, with its
# commands (imas-train, imas-eval, ...) in .venv/bin; single_run.sh uses .venv/bin/python when it exists.
# On a machine without an NVIDIA GPU (no working nvidia-smi) it first installs PyTorch's CPU build from
# https://download.pytorch.org/whl/cpu, a few hundred MB instead of several GB of CUDA libraries; where
# that index cannot be reached it says so and takes PyPI's build.
#   EXTRAS  optional extras, comma-separated: dev (tests, ruff), report (matplotlib), analysis (pandas)
#   TORCH=cpu|pypi|auto (environment; default auto) forces the CPU build, or PyPI's build, of torch
#   PYTHON  the interpreter that creates .venv (default python3; Python >= 3.10)
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-auto}
CPU_INDEX=https://download.pytorch.org/whl/cpu
start=$(date +%s)
case "$TORCH" in
    auto)  # PyPI's torch for macOS is already the CPU (and MPS) build
        if [ "$(uname -s)" = Darwin ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
        then TORCH=pypi; else TORCH=cpu; fi ;;
    cpu|pypi) ;;
    *) echo "error: TORCH must be cpu, pypi or auto, got '$TORCH'" >&2; exit 2 ;;
esac
if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
    echo "error: $PYTHON is not Python 3.10 or newer; give one with PYTHON=python3.11 sh install.sh" >&2
    exit 2
fi
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then  # none yet, or one a failed attempt left
    rm -rf .venv
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        echo "error: $PYTHON -m venv failed; on Debian or Ubuntu install the python3-venv package first" >&2
        exit 2
    fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$TORCH" = cpu ] && ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "no NVIDIA GPU found: installing PyTorch's CPU build from $CPU_INDEX"
    if ! .venv/bin/python -m pip install --quiet --retries 0 --timeout 20 torch torchvision \
        --index-url "$CPU_INDEX" 2>.venv/torch-cpu.log; then
        echo "warning: that failed (.venv/torch-cpu.log says why); torch comes from PyPI, with its CUDA libraries (several GB)" >&2
    elif ! .venv/bin/python -c "import torch, torchvision" 2>>.venv/torch-cpu.log; then
        # e.g. a pip configured with other indexes too, mixing builds: PyPI's pair instead
        echo "warning: the torch and torchvision installed do not import together (.venv/torch-cpu.log); taking PyPI's" >&2
        .venv/bin/python -m pip uninstall --quiet --yes torch torchvision
    fi
fi
TARGET=.
[ $# -gt 0 ] && TARGET=".[$1]"
.venv/bin/python -m pip install --quiet -e "$TARGET"
.venv/bin/python -c "import torch; print(f'torch {torch.__version__}', 'CPU build' if torch.version.cuda is None else f'CUDA {torch.version.cuda} build', '(a GPU is visible)' if torch.cuda.is_available() else '(no GPU visible)')"
echo "installed in .venv in $(( $(date +%s) - start )) s; next: sh single_run.sh (the quick start), or . .venv/bin/activate for the imas-* commands"
