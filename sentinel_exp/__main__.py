import sys

from sentinel_exp.cli import early_stop

early_stop.install()
try:
    from sentinel_exp.cli.app import main

    main()
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
