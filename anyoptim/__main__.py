"""``python -m anyoptim``: the same command as ``anyoptim``."""

import sys

from .lesson.cli import main

if __name__ == "__main__":
    sys.exit(main())
