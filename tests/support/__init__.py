"""Helpers the tests import (tests/ is on sys.path through pytest's `pythonpath` setting)."""
