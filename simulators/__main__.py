"""`python -m simulators` runs the `yibao-sim` command line."""

import sys

from simulators.cli import main

sys.exit(main())
