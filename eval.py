"""`imas-eval` run from a checkout, also under torchrun: the evaluation and its options are in
imas/evaluate.py."""

from imas.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
