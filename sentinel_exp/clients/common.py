"""What every streamed request shares, on either path: the record it fills, its clock points
(docs/measurement.md, Clock points), how its stream is read (StreamReader, one per wire) and how
its failures are classed.

Two paths send a request: `http1.LoopbackClient` to a server on this machine (t0 just before the
request's one write, every piece of data stamped as the event loop hands it over), and httpx to any
other (t0 from httpx's `trace` extension when the request headers start going out, TTFB when they
are in, chunks stamped when the reading task gets their bytes: NDJSON before JSON parsing, SSE
events once httpx-sse has split them off).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
from httpx_sse import EventSource, SSEError

from sentinel_exp.clients.framing import Framing, NdjsonLines
from sentinel_exp.names import ErrorClass
from sentinel_exp.records import RequestRecord

NS_PER_MS = 1_000_000
# A reused keep-alive connection that closes this soon after the request went out, before a byte
# of the answer, was closed while idle as the request crossed (cpp-httplib, under llama.cpp's
# server, closes one after 5 s idle; proxies after their own timeouts): the request goes again,
# once, on a new connection. Later, the server had it (a crash while working on it), and the close
# is the request's failure.
STALE_CLOSE_S = 0.5
# After the stream's final chunk, how long the body's own end (the chunked terminator, a few bytes
# that follow at once) is waited for, outside the record: a server that stalls there must not hold
# a worker for the whole read timeout, and one that ends it lets the connection be kept.
FINAL_CHUNK_GRACE_S = 1.0


class StreamFault(Exception):
    """The server's stream ended badly: an error line, a malformed line, no final chunk."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class RequestSpec:
    path: str
    body: dict[str, Any]
    prompt_index: int


class Clock:
    """Collects the trace events of one request."""

    __slots__ = ("connected", "t0", "t_headers", "t_sent")

    def __init__(self) -> None:
        self.connected = False  # the request opened its connection (else it reused a kept-alive one)
        self.t0: int | None = None
        self.t_sent: int | None = None
        self.t_headers: int | None = None

    def stale_close(self) -> bool:
        """Whether a close before any answer was a reused connection closing as the request crossed."""
        sent = self.t_sent or self.t0
        return not self.connected and sent is not None and time.perf_counter_ns() - sent < STALE_CLOSE_S * 1e9

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("connect_tcp.started"):
            self.connected = True
        elif event.endswith("send_request_headers.started"):
            self.t0 = time.perf_counter_ns()
        elif event.endswith("send_request_body.complete"):
            self.t_sent = time.perf_counter_ns()
        elif event.endswith("receive_response_headers.complete"):
            self.t_headers = time.perf_counter_ns()


class TokenTimes:
    """Token-chunk arrival times, written into the record as milliseconds from t0."""

    def __init__(self, record: RequestRecord, t0: int) -> None:
        self.record = record
        self.t0 = t0

    def token(self, text: str, arrived_ns: int) -> None:
        if not text:
            return
        at_ms = (arrived_ns - self.t0) / NS_PER_MS
        if self.record.ttft_ms is None:
            self.record.ttft_ms = at_ms
        self.record.chunk_times_ms.append(at_ms)
        self.record.output_chars += len(text)

    def finished(self, arrived_ns: int) -> None:
        self.record.e2e_ms = (arrived_ns - self.t0) / NS_PER_MS


class StreamReader(ABC):
    """Reads one response's frames (NDJSON lines or SSE event data) into its TokenTimes. `feed` is
    called with each frame and the arrival of the bytes that completed it, as they arrive."""

    framing: ClassVar[Framing]

    def __init__(self, times: TokenTimes) -> None:
        self.times = times

    @abstractmethod
    def feed(self, frame: bytes | str, arrived: int) -> bool:
        """Apply one frame; True once the stream's final chunk has been seen. Raises StreamFault
        for an error in the stream or a chunk that is not JSON."""

    def end(self) -> None:  # noqa: B027 (a hook: most wires conclude nothing at the end of the body)
        """The body ended before `feed` said the stream was complete."""


async def consume_response(response: httpx.Response, reader: StreamReader) -> None:
    """Read an httpx response's body through `reader` (the path for servers off this machine).
    After the final chunk, what is left of the body (a chunked terminator, a few bytes) is read
    for up to FINAL_CHUNK_GRACE_S, outside the record, so that the connection can be kept for the
    next request: httpx closes one whose answer was not read to its end."""
    clock = time.perf_counter_ns
    if reader.framing is Framing.SSE:
        events = EventSource(response).aiter_sse()
        try:
            async for event in events:
                if reader.feed(event.data, clock()):
                    await _drain(events)
                    return
        except SSEError as exc:
            raise StreamFault(ErrorClass.MALFORMED_CHUNK, str(exc)) from None
    else:
        lines, arrived = NdjsonLines(), 0
        chunks = response.aiter_bytes()
        async for data in chunks:
            arrived = clock()
            for line in lines.feed(data):
                if reader.feed(line, arrived):
                    await _drain(chunks)
                    return
        for line in lines.flush():
            if reader.feed(line, arrived):
                return
    reader.end()


async def _drain(rest: AsyncIterator[Any]) -> None:
    """Read the body's end past the final chunk, briefly; whatever it holds, the request is done."""

    async def read_all() -> None:
        async for _ in rest:
            pass

    try:
        await asyncio.wait_for(read_all(), FINAL_CHUNK_GRACE_S)
    except (TimeoutError, httpx.HTTPError, SSEError):
        pass  # the connection is not kept: httpx closes a half-read one


ReaderFactory = Callable[[TokenTimes], StreamReader]


def json_object(frame: bytes | str) -> dict[str, Any]:
    """One frame's JSON object; StreamFault (MalformedChunk) for anything else."""
    try:
        chunk = json.loads(frame)
    except json.JSONDecodeError:
        raise StreamFault(ErrorClass.MALFORMED_CHUNK, f"not JSON: {frame[:120]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamFault(ErrorClass.MALFORMED_CHUNK, f"not a JSON object: {frame[:120]!r}")
    return chunk


def check_sse_content_type(content_type: str) -> None:
    """An SSE stream says so in its Content-Type (what httpx-sse checks on the httpx path)."""
    media = content_type.partition(";")[0]
    if "text/event-stream" not in media:
        raise StreamFault(
            ErrorClass.MALFORMED_CHUNK,
            f"Expected response header Content-Type to contain 'text/event-stream', got {media!r}",
        )


def error_text(body: bytes) -> str:
    """The message of an error body: Ollama's {"error": "..."} or OpenAI's {"error": {...}}."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body[:300].decode(errors="replace")
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err if err is not None else data)[:300]


def failure_of(exc: Exception) -> tuple[str, str]:
    """The error class and message a request's failure is recorded with."""
    if isinstance(exc, StreamFault):
        return exc.error_class, str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return type(exc).__name__, str(exc) or "timed out"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__, str(exc) or type(exc).__name__
    # Well-formed JSON of the wrong shape (a list where an object belongs, a string duration).
    return ErrorClass.MALFORMED_CHUNK, f"{type(exc).__name__}: {exc}"


class RequestSender(Protocol):
    """A client with a lean path of its own for the measured requests (http1.LoopbackClient)."""

    async def send(self, spec: RequestSpec, record: RequestRecord, read: ReaderFactory, submitted: int) -> None: ...


async def send_request(
    client: httpx.AsyncClient | RequestSender,
    spec: RequestSpec,
    record: RequestRecord,
    read: ReaderFactory,
    arrival_ns: int | None = None,
) -> RequestRecord:
    """Send one streaming request and fill `record`, its stream read by `read(times)` (a wire's
    `reader`); never raises except on cancellation. `arrival_ns` is when the request became due
    (default: now); the time until it goes onto the socket is its queue_ms."""
    submitted = time.perf_counter_ns() if arrival_ns is None else arrival_ns
    record.started_at = time.time() - (time.perf_counter_ns() - submitted) / 1e9
    try:
        if isinstance(client, httpx.AsyncClient):
            await _send_httpx(client, spec, record, read, submitted)
        else:
            await client.send(spec, record, read, submitted)
        if record.error_class is None:
            record.ok = record.e2e_ms is not None
            if not record.ok:
                raise StreamFault(ErrorClass.STREAM_CUT, "stream ended before the final chunk")
    except (StreamFault, httpx.HTTPError, TypeError, ValueError, AttributeError, KeyError) as exc:
        record.error_class, record.error = failure_of(exc)
    except asyncio.CancelledError:
        record.ok = False
        record.error_class, record.error = ErrorClass.CANCELLED, "run stopped before the request finished"
        raise
    if record.error_class is not None:
        record.ok = False
    return record


async def _send_httpx(
    client: httpx.AsyncClient, spec: RequestSpec, record: RequestRecord, read: ReaderFactory, submitted: int
) -> None:
    clock = Clock()
    try:
        response = await client.send(_httpx_request(client, spec, clock), stream=True)
    except httpx.RemoteProtocolError:
        if not clock.stale_close():
            raise
        clock = Clock()  # as the loopback client does (http1.py): once more
        response = await client.send(_httpx_request(client, spec, clock), stream=True)
    try:
        t0 = clock.t0 if clock.t0 is not None else submitted
        record.queue_ms = (t0 - submitted) / NS_PER_MS
        if clock.t_sent is not None:
            record.send_ms = (clock.t_sent - t0) / NS_PER_MS
        if clock.t_headers is not None:
            record.ttfb_ms = (clock.t_headers - t0) / NS_PER_MS
        record.http_status = response.status_code
        if response.status_code >= 400:
            record.error_class = f"HTTP{response.status_code}"
            record.error = error_text(await response.aread())
            return
        await consume_response(response, read(TokenTimes(record, t0)))
    finally:
        await response.aclose()


def _httpx_request(client: httpx.AsyncClient, spec: RequestSpec, clock: Clock) -> httpx.Request:
    return client.build_request("POST", spec.path, json=spec.body, extensions={"trace": clock.trace})
