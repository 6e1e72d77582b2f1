"""``python -m discretegrad``: the same command as ``discretegrad``."""

import sys

from discretegrad.cli import main

if __name__ == "__main__":
    sys.exit(main())
