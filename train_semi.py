"""`imas-train` run from a checkout, also under torchrun: the training loop and its options are in
imas/train.py."""

from imas.train import main

if __name__ == "__main__":
    raise SystemExit(main())
