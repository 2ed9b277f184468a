"""imas-report: one self-contained HTML page about a training run. The command and its usage text are in
imas.report.command; what the page is made of in .reading, the page in .page, its plots in .plots and its
galleries in .gallery."""

from imas.report.command import main

__all__ = ["main"]
