import sys

from imas.entry import report

sys.exit(report())
