"""``python -m jwql_dramatiq``: the operator command line."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
