"""``python -m kata_vfio`` runs the CLI."""

import sys

from kata_vfio.cli import main

sys.exit(main())
