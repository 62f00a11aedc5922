"""`python -m sentinel_exp.sync`: upload run folders to MLflow later (sentinel_exp/cli/sync.py)."""

import sys

from sentinel_exp.cli.sync import main

if __name__ == "__main__":
    sys.exit(main())
