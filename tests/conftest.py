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


# A wall-clock bound can be broken by a neighbour on a busy CI machine, not only by a regression:
# each `timing` test gets one rerun (pytest-rerunfailures), and only those. A second failure fails.
TIMING_RERUNS = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timing") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=TIMING_RERUNS))
