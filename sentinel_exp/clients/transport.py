"""An httpx transport whose connections stamp bytes the moment the event loop hands them over.

httpx reads through httpcore's anyio streams: bytes that arrive are buffered by anyio's protocol,
and the task reading them resumes one or more loop iterations later, after every other ready
callback. Under load (dozens of streams on one loop) that wait lands inside each token's stamp.
Here the connection is a plain asyncio Protocol: `data_received` stamps each piece of data
(`time.perf_counter_ns`) as it is queued, and every `read()` returns one piece and records its
stamp, so a consumer reads the arrival of the bytes it is parsing (`arrival_clock`), not the
moment its task got to run. It also spares a cancel scope per read (anyio's `fail_after`): the
read timeout is one timer handle.

Plain http only (no TLS, no proxy): `measuring_client` uses it for loopback servers, where the
microseconds matter; anything else keeps httpx's own transport.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from sentinel_exp.urls import is_loopback_url

# Stop reading from the socket while this much is buffered and unread (a stalled consumer).
_HIGH_WATER = 1 << 20


class _StampingProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pieces: deque[tuple[int, bytes]] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.error: Exception | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.pieces.append((time.perf_counter_ns(), data))
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self.read_waiter is not None and not self.read_waiter.done():
            self.read_waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], exc: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(exc)


async def _wait(waiter: asyncio.Future[None], timeout: float | None, on_timeout: Exception) -> None:
    timer = None if timeout is None else asyncio.get_running_loop().call_later(timeout, _expire, waiter, on_timeout)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()


class StampedStream(httpcore.AsyncNetworkStream):
    """One connection; `last_arrival_ns` is when the bytes the last read returned arrived."""

    def __init__(self, transport: asyncio.Transport, protocol: _StampingProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.last_arrival_ns = 0

    def last_arrival(self) -> int:
        return self.last_arrival_ns

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        proto = self._protocol
        if not proto.pieces and not proto.eof:
            proto.read_waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(proto.read_waiter, timeout, httpcore.ReadTimeout("timed out"))
            finally:
                proto.read_waiter = None
        if proto.pieces:
            stamp, data = proto.pieces.popleft()
            if len(data) > max_bytes:
                proto.pieces.appendleft((stamp, data[max_bytes:]))
                data = data[:max_bytes]
            proto.buffered -= len(data)
            if proto.reading_paused and proto.buffered <= _HIGH_WATER // 2:
                self._transport.resume_reading()
                proto.reading_paused = False
            self.last_arrival_ns = stamp
            return data
        if proto.error is not None:
            raise httpcore.ReadError(str(proto.error) or type(proto.error).__name__)
        return b""  # the server closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        proto = self._protocol
        if proto.eof or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if proto.writing_paused:
            proto.write_waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(proto.write_waiter, timeout, httpcore.WriteTimeout("timed out"))
            finally:
                proto.write_waiter = None
            if proto.eof:
                raise httpcore.WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        self._transport.close()

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "is_readable":
            # httpcore asks before reusing an idle connection: readable = closed or sent something unasked.
            return self._protocol.eof or bool(self._protocol.pieces)
        return None


class StampingBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(_StampingProtocol, host, port, local_addr=local), timeout
            )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return StampedStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class StampingTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its exception mapping, its response streams) over StampingBackend."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=StampingBackend(),
        )


def arrival_clock(response: httpx.Response) -> Callable[[], int]:
    """When the bytes a consumer has just been handed arrived: the stamp of the last read on the
    response's connection when it came through StampingTransport, else now."""
    stream = response.extensions.get("network_stream")
    return stream.last_arrival if isinstance(stream, StampedStream) else time.perf_counter_ns


def headers_arrival_ns(response: httpx.Response) -> int | None:
    """When the bytes that completed the response headers arrived (StampingTransport only): read
    as the response is handed over, before any body read, the last read is the one that ended them."""
    stream = response.extensions.get("network_stream")
    return stream.last_arrival_ns if isinstance(stream, StampedStream) and stream.last_arrival_ns else None


def measuring_client(
    url: str, concurrency: int, read_timeout_s: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """The client a run's requests go through: a connection per in-flight request, and on loopback
    the stamping transport and no proxies from the environment (they would sit inside every
    measured interval)."""
    connections = max(1, concurrency)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    loopback = is_loopback_url(url)
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(connect=10.0, read=read_timeout_s, write=30.0, pool=None),
        limits=limits,
        transport=StampingTransport(limits) if loopback and url.startswith("http://") else None,
        headers=headers,
        trust_env=not loopback,
    )
