"""The installed commands' entry points (pyproject.toml [project.scripts]) and the checkout's scripts: each
parses its command line with imas.arguments first, so that `--help` and a usage error answer before torch
is imported, then hands the same arguments to its command module's `main`, which runs under
imas.cli.run_command."""

from __future__ import annotations

from collections.abc import Sequence

from imas import arguments


def train(argv: Sequence[str] | None = None) -> int:
    """imas-train (python train_semi.py)."""
    arguments.parse_train(argv)
    from imas.train import main

    return main(argv)


def st_plus_plus(argv: Sequence[str] | None = None) -> int:
    """imas-st-plus-plus."""
    arguments.parse_st_plus_plus(argv)
    from imas.st_plus_plus import main

    return main(argv)


def evaluate(argv: Sequence[str] | None = None) -> int:
    """imas-eval (python eval.py)."""
    arguments.parse_eval(argv)
    from imas.evaluate import main

    return main(argv)


def predict(argv: Sequence[str] | None = None) -> int:
    """imas-predict (python predict.py)."""
    arguments.parse_predict(argv)
    from imas.predict import main

    return main(argv)


def pseudo_labels(argv: Sequence[str] | None = None) -> int:
    """imas-pseudo-labels."""
    arguments.parse_pseudo_labels(argv)
    from imas.pseudo_labels import main

    return main(argv)


def report(argv: Sequence[str] | None = None) -> int:
    """imas-report (python -m imas.report)."""
    arguments.parse_report(argv)
    from imas.report.command import main

    return main(argv)


def compare(argv: Sequence[str] | None = None) -> int:
    """imas-compare."""
    arguments.parse_compare(argv)
    from imas.compare import main

    return main(argv)


def data(argv: Sequence[str] | None = None) -> int:
    """imas-data."""
    arguments.parse_data(argv)
    from imas.data.commands import main

    return main(argv)
