"""`python -m gateway ...` is `yibao-gateway ...`."""

import sys

from gateway.cli import main

sys.exit(main())
