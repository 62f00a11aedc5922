"""Starting a bundled server, `python -m sentinel_exp.serve`, as a child process: the one way the
runner, the tests and the scripts in scripts/ start one.

The child listens on 127.0.0.1 and a free port, runs in a session of its own (a terminal's Ctrl-C
reaches only the parent, which then stops the server itself), exits when the parent is gone
(--exit-with-parent), and writes its stderr to a log file. Its ready line is read on a thread
that drains stdout to the end, so the line is never missed in a buffer and a chatty child never
blocks on a full pipe.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel_exp.serve import READY_PREFIX, STANDBY_FLAG

# The folder that holds the sentinel_exp package, put on the child's PYTHONPATH so the child
# runs this very code, installed or not and from any working directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 2000
STOP_TIMEOUT_S = 10.0
SERVE = [sys.executable, "-m", "sentinel_exp.serve"]


class ServerStartError(RuntimeError):
    """The server exited, or printed no ready line in time; the message ends with its log's tail."""

    def __init__(self, message: str, exit_code: int | None, log_tail: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


@dataclass
class BundledServer:
    """A started server: its URL and pid as its ready line gave them, and its process."""

    engine: str
    url: str
    pid: int
    process: subprocess.Popen[str]
    log_path: Path
    # A log file made for this server (no log_path was given): removed when it stops.
    temporary_log: bool = False

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return _tail(self.log_path, chars)

    def stop(self) -> None:
        """Terminate the server, kill it if it has not exited within STOP_TIMEOUT_S."""
        stop_process(self.process)
        if self.temporary_log:
            self.log_path.unlink(missing_ok=True)

    def stop_soon(self) -> None:
        """Terminate the server and return at once; it is waited for (and killed if it lingers)
        before the next server starts, or at exit. Its shutdown, about 0.2 s, then overlaps what
        the caller does next (a run's upload) instead of adding to it."""
        if self.temporary_log:
            self.stop()
            return
        if self.process.poll() is None:
            self.process.terminate()
            _stopping.append(self.process)


def start_server(
    engine: str,
    args: Sequence[str] = (),
    *,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> BundledServer:
    """Start `python -m sentinel_exp.serve --engine ENGINE ARGS` and wait for its ready line.

    `env` is added to this process's environment; the server's stderr goes to `log_path` (a
    temporary file when None). Raises ServerStartError, with the log's tail, if the server exits
    first or is not ready within `timeout_s`. The caller stops it (`stop`), or uses `running_server`.
    """
    # Never two bundled servers at once: one that is still stopping (its model in memory) goes first.
    wait_for_stopping()
    args_line = _command_line(engine, args)
    log = _ServerLog.for_server(engine, log_path)
    process = _take_standby(args_line, log.path) if env is None and cwd is None else None
    if process is None:
        process = _spawn(args_line, log.path, env, cwd)
    ready, exit_code = _ready_line(process, timeout_s, log)
    if ready is None:
        stop_process(process)
        raise log.start_error(engine, exit_code, timeout_s)
    return BundledServer(str(engine), str(ready["url"]), int(ready["pid"]), process, log.path, log.temporary)


def _command_line(engine: str, args: Sequence[str]) -> list[str]:
    """The server's arguments: a free loopback port, and an exit when this process is gone."""
    return [
        "--engine",
        str(engine),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--exit-with-parent",
        str(os.getpid()),
        *args,
    ]


@dataclass(frozen=True)
class _ServerLog:
    """Where a starting server writes its stderr."""

    path: Path
    temporary: bool  # made here (no log_path was given): removed when the server stops

    @classmethod
    def for_server(cls, engine: str, log_path: Path | None) -> _ServerLog:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            return cls(log_path, temporary=False)
        fd, name = tempfile.mkstemp(prefix=f"sentinel-{engine}-server-", suffix=".log")
        os.close(fd)
        return cls(Path(name), temporary=True)

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)

    def start_error(self, engine: str, exit_code: int | None, timeout_s: float) -> ServerStartError:
        """Why the server did not start, with its log's tail (a temporary log is removed)."""
        tail = _tail(self.path, LOG_TAIL_CHARS)
        where = "" if self.temporary else f" ({self.path})"
        self.discard()
        how = f"exited with code {exit_code}" if exit_code is not None else f"was not ready within {timeout_s:g} s"
        return ServerStartError(
            f"the {engine} server did not start: it {how}. Its log{where}:\n{tail}", exit_code, tail
        )


def _spawn(
    args_line: list[str], log_path: Path, env: Mapping[str, str] | None, cwd: Path | None
) -> subprocess.Popen[str]:
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen(
            [*SERVE, *args_line],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_child_env(env),
            cwd=cwd,
            start_new_session=True,
        )


def _ready_line(
    process: subprocess.Popen[str], timeout_s: float, log: _ServerLog
) -> tuple[dict[str, Any] | None, int | None]:
    """The ready line's JSON, or None and the child's exit code (None too: not ready in time)."""
    try:
        ready = _await_ready(process, timeout_s)
        if ready is None:  # stdout closed: the child is exiting, and its code says why
            return None, process.wait(timeout=5)
        return ready, None
    except (TimeoutError, subprocess.TimeoutExpired):
        return None, None
    except BaseException:  # e.g. Ctrl-C while waiting: leave nothing behind
        stop_process(process)
        log.discard()
        raise


@contextmanager
def running_server(
    engine: str,
    args: Sequence[str] = (),
    *,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[BundledServer]:
    """`start_server` for a `with` block: the server is stopped on every way out of it."""
    server = start_server(engine, args, timeout_s=timeout_s, log_path=log_path, env=env, cwd=cwd)
    try:
        yield server
    finally:
        server.stop()


def stop_process(process: subprocess.Popen[str]) -> None:
    """Terminate, then kill if it has not exited within STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), child_env.get("PYTHONPATH")) if p)
    return child_env


# A server process with its imports done, waiting for its command line (prepare_standby).
_standby: subprocess.Popen[str] | None = None


def prepare_standby() -> None:
    """Start a server process that imports what serving needs and then waits: the next
    start_server of this process hands it its command line and skips about 0.2 s of start-up (a
    sweep's next job). Unused, it exits with this process."""
    global _standby
    if _standby is not None and _standby.poll() is None:
        return
    _standby = subprocess.Popen(
        [*SERVE, STANDBY_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_child_env(None),
        start_new_session=True,
    )


def _take_standby(args_line: list[str], log_path: Path) -> subprocess.Popen[str] | None:
    """The standby process, told to serve as `args_line`; None when there is none or it is gone."""
    global _standby
    process, _standby = _standby, None
    if process is None or process.stdin is None:
        return None
    try:
        process.stdin.write(json.dumps({"argv": args_line, "log": str(log_path)}) + "\n")
        process.stdin.close()
    except OSError:  # it died: start afresh
        stop_process(process)
        return None
    return process


def _drop_standby() -> None:
    global _standby
    process, _standby = _standby, None
    if process is not None and process.stdin is not None:
        process.stdin.close()  # it reads the end of its input and exits
        stop_process(process)


# Servers told to stop by BundledServer.stop_soon, not yet waited for.
_stopping: list[subprocess.Popen[str]] = []


def wait_for_stopping() -> None:
    """Wait for every server that stop_soon told to stop, killing any that lingers."""
    while _stopping:
        stop_process(_stopping.pop())


atexit.register(wait_for_stopping)
atexit.register(_drop_standby)


def _await_ready(process: subprocess.Popen[str], timeout_s: float) -> dict[str, Any] | None:
    """The ready line's JSON ({"url", "pid", "engine"}); None if the child closed stdout first (it
    is exiting). Raises TimeoutError when `timeout_s` passes first."""
    found: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # to the end, after the ready line too: the pipe never fills
            if line.startswith(READY_PREFIX):
                try:
                    found.put(json.loads(line[len(READY_PREFIX) :]))
                except json.JSONDecodeError:
                    pass
        found.put(None)

    threading.Thread(target=pump, name="server-stdout", daemon=True).start()
    try:
        return found.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError from None


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:].strip()
    except FileNotFoundError:
        return ""
