"""``python -m metalab``: the same command line as the ``metalab`` script."""

import sys

from metalab.cli import main

sys.exit(main())
