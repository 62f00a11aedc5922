"""The event loop both the client and the bundled servers run on.

uvloop wakes up sooner after I/O than the default selector loop, which is latency that would
otherwise land inside every measured TTFT; the stdlib loop is the fallback where uvloop is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
