"""Unit tests are pure: no sockets, no subprocesses, no sleeping. Each of those raises here, so a
test that needs one fails at once and says to move it to tests/integration."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from collections.abc import Callable
from typing import NoReturn

import pytest


class ImpureUnitTest(BaseException):
    """A BaseException, so that code under test catching `Exception` cannot swallow it."""


def _forbid(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise ImpureUnitTest(
            f"{what} in a unit test: tests/unit is pure (no sockets, subprocesses or sleeps); "
            f"a test that needs it belongs in tests/integration"
        )

    return refuse


@pytest.fixture(autouse=True, scope="session")
def _platform_cached() -> None:
    """platform.uname() runs `uname -p` once per process and caches it; the environment
    fingerprint reads it. Asked here, before any test, the fingerprint's tests stay pure."""
    platform.uname().processor  # noqa: B018 (the attribute is computed on first access)


@pytest.fixture(autouse=True)
def _pure(_platform_cached: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for method in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, method, _forbid(f"socket.{method}()"))
    # __init__ rather than the module attribute: `from subprocess import Popen` and asyncio's
    # subprocesses are caught too.
    monkeypatch.setattr(subprocess.Popen, "__init__", _forbid("subprocess.Popen()"))
    # asyncio.sleep is untouched: awaiting asyncio.sleep(0) yields to the loop without waiting.
    monkeypatch.setattr(time, "sleep", _forbid("time.sleep()"))
