"""`python -m sentinel_exp.compare`: the comparison of runs (sentinel_exp/cli/compare.py)."""

import sys

from sentinel_exp.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
