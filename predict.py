"""`imas-predict` run from a checkout: the segmentation of arbitrary images and its options are in
imas/predict.py."""

from imas.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
