"""`imas-train` run from a checkout, also under torchrun: the training loop is in imas/train.py, its options
in imas/arguments.py (parsed before torch is imported, by imas.entry)."""

from imas.entry import train as main

if __name__ == "__main__":
    raise SystemExit(main())
