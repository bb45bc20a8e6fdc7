"""`python -m app.export`."""

import sys

from app.export.cli import main

sys.exit(main())
