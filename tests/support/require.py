"""Tests that need something outside Python (a Debian package, mount privileges, an extra, a
network address) say so through `require`: on a developer's machine a missing dependency skips
the test with the reason; under CI=true, where .ci/run provides every one of them, it fails the
test instead, so that a green CI never hides a test that did not run."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(condition: object, why: str) -> None:
    """Go on when `condition` holds; else skip (fail under CI=true), saying `why`. Works at module
    level too, where it skips or fails the whole file."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and {why}: .ci/run provides it, so this test must run", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def require_module(name: str, why: str) -> ModuleType:
    """The module `name`, as pytest.importorskip gives it, but failing under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, why)
        raise  # unreachable: require skipped or failed
