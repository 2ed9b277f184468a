"""Developer tools, run from a checkout (`python tools/NAME.py` or `python -m tools.NAME`) and imported by the
tests as `from tools import NAME`: the benchmarks, the GPU check, the toy benchmark and backbone pretraining,
and the pretrained-weights converter. The user commands are installed with the package (imas-*)."""
