"""``python -m edgeseg`` runs the command line."""

import sys

from edgeseg.cli import main

sys.exit(main())
