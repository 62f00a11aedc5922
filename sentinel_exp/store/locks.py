"""Turns that processes (and threads) of this machine take around a shared step: an exclusive
flock on a file or folder, released when its descriptor closes. Where there is no flock (not
POSIX) nobody waits, as before there was a lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold `path` (an existing file or folder) exclusively for the block."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock
