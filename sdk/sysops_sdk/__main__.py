"""`python -m sysops_sdk`: the command every plugin container runs."""

import sys

from sysops_sdk._server import main

sys.exit(main())
