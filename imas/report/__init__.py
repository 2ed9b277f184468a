"""imas-report: one self-contained HTML page about a training run. The command is in imas.report.command;
what the page is made of in .reading, the page in .page, its plots in .plots and its galleries in .gallery.
Importing this package imports none of them (nor torch): `python -m imas.report --help` answers at once."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """imas.report.command.main, imported when called."""
    from imas.report.command import main as command_main

    return command_main(argv)


__all__ = ["main"]
