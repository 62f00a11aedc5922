"""Fixtures both levels see. Helpers to import live in tests/support/ (a conftest is not importable
by name once tests/unit and tests/integration have their own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import BundledServer, start_server


@pytest.fixture
def sim_server_factory() -> Iterator[Callable[..., BundledServer]]:
    """Start simulated servers with these `python -m sentinel_exp.serve` flags; all stop at the end."""
    started: list[BundledServer] = []

    def factory(*args: str) -> BundledServer:
        server = start_server(ServerKind.simulated, args, timeout_s=120.0)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
