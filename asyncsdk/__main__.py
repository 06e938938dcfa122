"""``python -m asyncsdk``: the command line (see :mod:`asyncsdk.cli`)."""

import sys

from .cli import main

sys.exit(main())
