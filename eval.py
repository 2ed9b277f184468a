"""`imas-eval` run from a checkout, also under torchrun: the evaluation is in imas/evaluate.py, its options in
imas/arguments.py (parsed before torch is imported, by imas.entry)."""

from imas.entry import evaluate as main

if __name__ == "__main__":
    raise SystemExit(main())
