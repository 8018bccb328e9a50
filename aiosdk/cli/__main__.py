"""``python -m aiosdk.cli``: the ``aiosdk`` command line."""

import sys

from . import main

sys.exit(main())
