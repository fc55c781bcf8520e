"""``python -m embedsearch.cli``: the same as the ``embedsearch`` command."""

import sys

from . import main

sys.exit(main())
