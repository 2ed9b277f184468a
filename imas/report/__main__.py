import sys

from imas.report.command import main

sys.exit(main())
