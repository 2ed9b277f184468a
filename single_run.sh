#!/bin/sh
# The quick start: sh single_run.sh (no arguments) makes the toy data and its backbone, trains SupOnly and
# iMAS side by side on the CPU and ends with the gain it measured (python -m tools.quick_start).
#
# Train one experiment: sh single_run.sh CONFIG [NGPU] [key.path=value ...] [--resume-anyway]
#   CONFIG  experiment YAML, e.g. exps/toy/imas.yaml (iMAS on the toy data)
#   NGPU    processes to launch, a bare number anywhere after CONFIG (default: every visible GPU; plain
#           python on one GPU or the CPU)
#   key.path=value ...  config overrides, e.g. train.epochs=2 optim.lr=0.002
#   --resume-anyway     continue an existing run directory under changed settings (see docs/reliability.md)
#   e.g. sh single_run.sh exps/toy/imas.yaml train.epochs=2 (or ... exps/toy/imas.yaml 1 train.epochs=2)
# The run directory is train.run_dir, or runs/<config path below exps/>: give overrides that change the
# result their own, e.g. train.run_dir=runs/toy/imas_lr002, or the run refuses to resume under them.
# The toy dataset and its pretrained backbone are made under data/toy on first use, when the config's
# data.root is data/toy. PYTHON chooses the interpreter (default: ./.venv/bin/python where it exists, else
# python); run it from the checkout's root.
set -eu
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
[ $# -eq 0 ] && exec "$PYTHON" -m tools.quick_start
CONFIG=$1
shift
NGPU=""
FLAGS=""
for arg in "$@"; do
    shift
    case "$arg" in
        --resume-anyway) FLAGS="--resume-anyway" ;;
        -*)
            echo "error: unknown option '$arg' (single_run.sh takes NGPU, key.path=value overrides and" \
                "--resume-anyway)" >&2
            exit 2
            ;;
        *=* | [A-Za-z]*) set -- "$@" "$arg" ;;  # an override (train_semi.py names a malformed one)
        '' | *[!0-9]*)
            echo "error: '$arg' is neither NGPU (a number) nor a key.path=value override" >&2
            exit 2
            ;;
        *)
            if [ -n "$NGPU" ]; then
                echo "error: NGPU is given twice ('$NGPU' and '$arg')" >&2
                exit 2
            fi
            NGPU=$arg
            ;;
    esac
done
if [ -z "$NGPU" ]; then
    NGPU=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi
# The toy data is prepared when the resolved config (overrides included) reads it; a config that cannot
# be read prints nothing here, and train_semi.py then names the problem.
# Printed for the toy data: "toy", then the backbone file the config starts from, if any, and the ResNet's
# width or the ViT's name (a DPT head is a ViT's: imas.config reads without torch, imas.models does not).
TOY=$("$PYTHON" -c "
import sys
from pathlib import Path
from imas.config import load_config
try:
    cfg = load_config(sys.argv[1], sys.argv[2:])
except Exception:
    sys.exit(0)
m = cfg.model
if Path(cfg.data.root).resolve() == Path('data/toy').resolve():
    target = m.encoder if m.head.value == 'dpt' else m.backbone_width
    print('toy', *([m.pretrained, target] if m.pretrained else []))
" "$CONFIG" "$@" 2>/dev/null || true)
if [ -n "$TOY" ]; then
    "$PYTHON" -m imas.data.toy --out data/toy --ensure  # (re)writes it when missing or outdated
    BACKBONE=${TOY#toy}
    if [ -n "$BACKBONE" ]; then  # the toy's pretrained backbone, likewise
        BACKBONE=${BACKBONE# }
        TARGET=${BACKBONE##* }
        case "$TARGET" in
            *[!0-9]*) TARGET="--encoder $TARGET" ;;  # a ViT's name
            *) TARGET="--width $TARGET" ;;
        esac
        # shellcheck disable=SC2086 # TARGET is an option and its value
        "$PYTHON" -m tools.toy_pretrain --out "${BACKBONE% *}" $TARGET --ensure
    fi
fi
set -- --config "$CONFIG" $FLAGS --opt "$@"
if [ "$NGPU" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" train_semi.py "$@"
else
    exec "$PYTHON" train_semi.py "$@"
fi
