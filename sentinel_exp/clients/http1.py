"""A lean HTTP/1.1 client for the measured requests to a server on this machine.

Against a loopback server the client's own cost is what a measurement would carry, and httpx pays
it per token: each chunk climbs through httpcore's and httpx's stream layers, a handful of async
generators, before it is parsed, and at a few dozen streams one event loop spends its core there
(docs/measurement.md, Measurement fidelity). Here a connection is a plain asyncio Protocol: each
piece of data is stamped (`time.perf_counter_ns`) first thing in `data_received`, fed to httptools'
parser (llhttp, in C), and the body's frames go straight to the wire's StreamReader in the same
callback, so a token costs one parse and no task switch. The request goes out in one write,
stamped just before it (t0), so the request's trip holds no client work.

Plain http to loopback only (no TLS, no proxy, no redirects): anything else goes through httpx.
Failures raise httpx's exceptions, so a record names the same error class on either path.

A keep-alive connection that the server closes while idle can close just as a request is written
on it. When a reused connection ends right after the request went out (common.STALE_CLOSE_S),
before a single byte of its answer, the request goes again on a new connection in its place (the
httpx path does the same): the server has not answered it, and counting it failed would charge the
server with the client's choice of connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

from sentinel_exp import __version__
from sentinel_exp.clients.common import (
    FINAL_CHUNK_GRACE_S,
    NS_PER_MS,
    STALE_CLOSE_S,
    ReaderFactory,
    RequestSpec,
    StreamReader,
    TokenTimes,
    check_sse_content_type,
    error_text,
)
from sentinel_exp.clients.framing import Framing, NdjsonLines, SseEvents
from sentinel_exp.records import RequestRecord

CONNECT_TIMEOUT_S = 10.0
ERROR_BODY_LIMIT = 64 * 1024  # of an error answer's body, kept for its message


class Exchange:
    """One request on a connection, from its write to the end of its response."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: StreamReader) -> None:
        self.reader = reader
        self.framer: NdjsonLines | SseEvents = SseEvents() if reader.framing is Framing.SSE else NdjsonLines()
        self.headers: asyncio.Future[None] = loop.create_future()  # the status line and headers are in
        self.done: asyncio.Future[None] = loop.create_future()  # the response has ended (or failed)
        for future in (self.headers, self.done):
            future.add_done_callback(_retrieve)  # a failure awaited through the other is not "never retrieved"
        self.status = 0
        self.headers_ns = 0
        self.content_type = b""
        self.delimited = False  # chunked or Content-Length: else the body runs to the end of the connection
        self.error_body = bytearray()  # the body of a status >= 400, read whole for its message
        self.answered = False  # a byte of the response has arrived
        self.finished = False  # the reader has seen the stream's final chunk
        self.on_finished: Callable[[], None] | None = None  # the watch shortens its timeout
        self.last_data_ns = 0  # the write's time, then each piece of data's: the read timeout counts from it

    def headers_in(self, status: int, arrived: int) -> None:
        """The status line and headers have arrived; an SSE stream must say it is one."""
        self.status, self.headers_ns = status, arrived
        if not self.headers.done():
            self.headers.set_result(None)  # first: a wrong Content-Type fails `done`, the record keeps its status
        if status < 400 and self.reader.framing is Framing.SSE:
            check_sse_content_type(self.content_type.decode("latin-1"))

    def feed_body(self, body: bytes, arrived: int) -> None:
        """A piece of the body, arrived at `arrived`: frames it completes go to the reader."""
        if self.finished:
            return
        if self.status >= 400:
            if len(self.error_body) < ERROR_BODY_LIMIT:
                self.error_body += body[: ERROR_BODY_LIMIT - len(self.error_body)]
            return
        for frame in self.framer.feed(body):
            if self.reader.feed(frame, arrived):
                self.finished = True
                if self.on_finished is not None:
                    self.on_finished()
                return

    def body_ended(self, arrived: int) -> None:
        """The body has ended: a frame it left unended is complete now; the reader may conclude."""
        if self.finished or self.status >= 400:
            return
        for frame in self.framer.flush():
            if self.reader.feed(frame, arrived):
                self.finished = True
                return
        self.reader.end()

    def fail(self, exc: BaseException) -> None:
        if self.finished:
            # The stream's final chunk is in: a close or a stall before the body's end fails the
            # connection (never reused), not the request, which is complete at that chunk.
            self.complete()
            return
        for future in (self.headers, self.done):
            if not future.done():
                future.set_exception(exc)

    def complete(self) -> None:
        if not self.headers.done():
            self.headers.set_exception(httpx.RemoteProtocolError("the response ended before its headers"))
        if not self.done.done():
            self.done.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the exchange in flight gets its bytes as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.now_ns = 0
        self.eof = False
        self.stray = False  # bytes nobody asked for: the connection cannot be reused
        self.keep_alive = True
        self.served = 0  # exchanges completed on this connection
        self.interim = False  # the message being parsed is a 1xx: not the answer, which follows it
        self.closed_unanswered = False  # it ended just after a write, before a byte of the answer

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.now_ns = time.perf_counter_ns()
        exchange = self.exchange
        if exchange is None:
            self.stray = True
            return
        exchange.last_data_ns = self.now_ns
        exchange.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ or exc)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols (101): not an HTTP/1.1 stream"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    # httptools.HttpResponseParser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        if exchange is None or self.parser.get_status_code() < 200:
            return
        lower = name.lower()
        if lower == b"content-type":
            exchange.content_type = value
        elif lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            exchange.delimited = True

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            # 100 Continue, 103 Early Hints: skipped, as httpx does; the answer's own head follows.
            self.interim = True
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.exchange is not None:
            self.exchange.headers_in(self.parser.get_status_code(), self.now_ns)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.feed_body(body, self.now_ns)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        exchange = self.exchange
        if exchange is None:
            return
        exchange.body_ended(self.now_ns)
        self.exchange = None
        self.served += 1
        exchange.complete()

    # ours

    def _ended(self, exc: Exception | None = None) -> None:
        self.eof = True
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.headers.done() and not exchange.delimited and exc is None:
            # A body without a length runs to the end of the connection: this is its end.
            try:
                self.on_message_complete()
            except Exception as error:
                self._fail(error)
            return
        if not exchange.headers.done():
            since_write_ns = time.perf_counter_ns() - exchange.last_data_ns
            self.closed_unanswered = not exchange.answered and since_write_ns < STALE_CLOSE_S * 1e9
            why = "Server disconnected without sending a response."
        else:
            why = "peer closed connection without sending complete message body"
        self._fail(httpx.RemoteProtocolError(why) if exc is None else httpx.ReadError(str(exc) or why))

    def _fail(self, exc: BaseException) -> None:
        exchange, self.exchange = self.exchange, None
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        if exchange is not None:
            exchange.fail(exc)

    def usable(self) -> bool:
        return self.keep_alive and not self.eof and not self.stray and self.transport is not None


class LoopbackClient:
    """Streams requests to one loopback server over at most `concurrency` keep-alive connections;
    a request that finds them all busy waits for one (that wait is the request's queue time)."""

    def __init__(
        self, url: str, concurrency: int, read_timeout_s: float, headers: dict[str, str] | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the loopback client speaks plain http to a host: {url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.read_timeout_s = read_timeout_s
        lines = {
            "Host": parts.netloc,
            "User-Agent": f"sentinel-exp/{__version__}",
            "Accept": "*/*",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        self._head = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode("latin-1")
        self._limit = max(1, concurrency)
        self._idle: list[_Connection] = []
        self._open = 0
        # Requests waiting for a connection, first come first served: a freed connection is handed
        # to the oldest (None: it was dropped, and the waiter opens one in its place), never taken by
        # a newer request. _open counts connections and the places handed over to open one.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def __aenter__(self) -> LoopbackClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    def request_bytes(self, path: str, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        start = f"POST {self.prefix}{path} HTTP/1.1\r\nContent-Length: {len(payload)}\r\n".encode("latin-1")
        return start + self._head + b"\r\n" + payload

    async def acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if not self._waiters:  # else older requests wait: this one queues behind them
            while self._idle:
                conn = self._idle.pop()
                if conn.usable():
                    return conn
                self._drop(conn)
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                return await self._connect_on_slot(loop)
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed over, then cancelled: the connection (or the room for one) goes to the next.
                handed = waiter.result()
                if handed is None:
                    self._pass_slot()
                else:
                    self._hand_over(handed)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if handed is not None:
            if handed.usable():
                return handed
            self._drop(handed)  # closed since it was handed over: its room is this request's to open one
        return await self._connect_on_slot(loop)

    async def _connect_on_slot(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A new connection in a place of the pool already counted in _open for it."""
        try:
            return await self._connect(loop)
        except BaseException:
            self._pass_slot()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        connecting = loop.create_connection(_Connection, self.host, self.port)
        try:
            # Not wait_for: on 3.11 it can swallow a cancellation that lands as the connect
            # completes, and a stopped run's request would go out after all.
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                transport, conn = await connecting
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.usable() and conn.exchange is None:
            self._hand_over(conn)
        else:
            self._drop(conn)
            self._pass_slot()

    @staticmethod
    def _drop(conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.abort()
        conn.exchange = None

    def _next_waiter(self) -> asyncio.Future[_Connection | None] | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _hand_over(self, conn: _Connection) -> None:
        """A freed connection goes to the oldest waiter, or idle when none waits."""
        waiter = self._next_waiter()
        if waiter is None:
            self._idle.append(conn)
        else:
            waiter.set_result(conn)

    def _pass_slot(self) -> None:
        """A connection's place in the pool, freed: the oldest waiter opens one in it (so no newer
        request takes it first), or the pool has room for one more."""
        waiter = self._next_waiter()
        if waiter is None:
            self._open -= 1
        else:
            waiter.set_result(None)

    async def send(self, spec: RequestSpec, record: RequestRecord, read: ReaderFactory, submitted: int) -> None:
        """Send one request and read its stream into `record` (see common.send_request).

        Everything the exchange needs is made before t0, and nothing but the wait follows the write:
        the server often runs on this core as soon as the request lands, and any work of ours between
        the write and the wait would delay it inside the measured interval."""
        request = self.request_bytes(spec.path, spec.body)
        conn = await self.acquire()
        held = True  # released in the end, unless a reconnect failed (it passes the place on itself)
        try:
            while True:
                try:
                    return await self._exchange(conn, request, record, read, submitted)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    if not (conn.served and conn.closed_unanswered):
                        raise
                # Closed while idle, in the instant the request went out: not the server's answer.
                # The request goes again at once, on a new connection in the closed one's place.
                self._drop(conn)
                held = False
                conn = await self._connect_on_slot(asyncio.get_running_loop())
                held = True
        finally:
            if held:
                self.release(conn)

    async def _exchange(
        self, conn: _Connection, request: bytes, record: RequestRecord, read: ReaderFactory, submitted: int
    ) -> None:
        assert conn.transport is not None and conn.exchange is None
        times = TokenTimes(record, 0)
        exchange = conn.exchange = Exchange(asyncio.get_running_loop(), read(times))
        stop_watching = self._watch(conn, exchange)
        try:
            t0 = exchange.last_data_ns = times.t0 = time.perf_counter_ns()
            conn.transport.write(request)
            t_sent = time.perf_counter_ns()
            await exchange.headers
            record.queue_ms = (t0 - submitted) / NS_PER_MS
            record.send_ms = (t_sent - t0) / NS_PER_MS
            record.ttfb_ms = (exchange.headers_ns - t0) / NS_PER_MS
            record.http_status = exchange.status
            await exchange.done
            if exchange.status >= 400:
                record.error_class = f"HTTP{exchange.status}"
                record.error = error_text(bytes(exchange.error_body))
        except BaseException:
            conn._fail(httpx.ReadError("the request was abandoned"))  # no reuse of a half-read connection
            raise
        finally:
            stop_watching()

    def _watch(self, conn: _Connection, exchange: Exchange) -> Callable[[], None]:
        """Fail `exchange` with ReadTimeout once no byte has come for read_timeout_s (one timer,
        re-armed only when it fires, not per piece of data); returns what stops the watch."""
        loop = asyncio.get_running_loop()
        grace_s = min(self.read_timeout_s, FINAL_CHUNK_GRACE_S)
        timeout_ns, grace_ns = round(self.read_timeout_s * 1e9), round(grace_s * 1e9)
        timer = loop.call_later(self.read_timeout_s, lambda: check())

        def check() -> None:
            nonlocal timer
            if exchange.done.done():
                return
            limit_ns = grace_ns if exchange.finished else timeout_ns
            idle = time.perf_counter_ns() - exchange.last_data_ns
            if idle >= limit_ns:
                conn._fail(httpx.ReadTimeout("timed out"))  # after the final chunk: the request is ok
            else:
                timer = loop.call_later((limit_ns - idle) / 1e9, check)

        def finished() -> None:
            nonlocal timer
            timer.cancel()
            timer = loop.call_later(grace_s, check)

        exchange.on_finished = finished
        return lambda: timer.cancel()
