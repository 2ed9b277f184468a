"""`imas-predict` run from a checkout: the segmentation of arbitrary images is in imas/predict.py, its
options in imas/arguments.py (parsed before torch is imported, by imas.entry)."""

from imas.entry import predict as main

if __name__ == "__main__":
    raise SystemExit(main())
