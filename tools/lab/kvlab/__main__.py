"""``python -m kvlab``: see kvlab.cli."""

from __future__ import annotations

import sys

from kvlab.cli import main

sys.exit(main())
