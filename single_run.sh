#!/bin/sh
# Train one experiment: sh single_run.sh [CONFIG] [NGPU] [key.path=value ...]
#   CONFIG  experiment YAML (default: exps/toy/imas.yaml, iMAS on the toy data)
#   NGPU    processes to launch (default: every visible GPU; plain python on one GPU or the CPU)
#   key.path=value ...  config overrides, e.g. train.epochs=2 optim.lr=0.002
# The toy dataset and its pretrained backbone are made under data/toy on first use. Set PYTHON to choose the interpreter.
set -eu
CONFIG=${1:-exps/toy/imas.yaml}
[ $# -gt 0 ] && shift
PYTHON=${PYTHON:-python}
if [ $# -gt 0 ]; then
    NGPU=$1
    shift
else
    NGPU=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
case "$NGPU" in
    ''|*[!0-9]*) echo "error: NGPU must be a number, got '$NGPU'" >&2; exit 2 ;;
esac
if grep -q "data/toy" "$CONFIG" 2>/dev/null; then
    "$PYTHON" -m imas.data.toy --out data/toy --ensure  # (re)writes it when missing or outdated
    "$PYTHON" tools/toy_pretrain.py --ensure            # the toy's pretrained backbone, likewise
fi
set -- --config "$CONFIG" --opt "$@"
if [ "$NGPU" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" train_semi.py "$@"
else
    exec "$PYTHON" train_semi.py "$@"
fi
