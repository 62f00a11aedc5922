"""Timing and fault handling shared by the Ollama and OpenAI streaming clients.

Clock points come from httpx's `trace` extension (see docs/measurement.md, Clock points): t0 when the request
headers start going onto the socket, TTFB when the response headers have arrived. NDJSON token
chunks are stamped when their bytes arrive, before any JSON parsing; SSE events as soon as
httpx-sse has split them off, before JSON parsing. Over StampingTransport (loopback servers) "arrive"
is when the event loop handed the bytes to the connection (transport.py), for TTFB too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sentinel_exp.clients.transport import headers_arrival_ns
from sentinel_exp.names import ErrorClass
from sentinel_exp.records import RequestRecord

NS_PER_MS = 1_000_000


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

    __slots__ = ("t0", "t_headers", "t_sent")

    def __init__(self) -> None:
        self.t0: int | None = None
        self.t_sent: int | None = None
        self.t_headers: int | None = None

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
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


Consume = Callable[[httpx.Response, TokenTimes], Awaitable[None]]


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


async def send_request(
    client: httpx.AsyncClient, spec: RequestSpec, record: RequestRecord, consume: Consume, arrival_ns: int | None = None
) -> RequestRecord:
    """Send one streaming request and fill `record`; never raises except on cancellation.
    `arrival_ns` is when the request became due (default: now); the time until it goes onto
    the socket is its queue_ms."""
    clock = Clock()
    submitted = time.perf_counter_ns() if arrival_ns is None else arrival_ns
    record.started_at = time.time() - (time.perf_counter_ns() - submitted) / 1e9
    try:
        async with client.stream("POST", spec.path, json=spec.body, extensions={"trace": clock.trace}) as response:
            t0 = clock.t0 if clock.t0 is not None else submitted
            record.queue_ms = (t0 - submitted) / NS_PER_MS
            if clock.t_sent is not None:
                record.send_ms = (clock.t_sent - t0) / NS_PER_MS
            # Stamped like the token chunks when the connection stamps arrivals, so TTFB <= TTFT holds.
            t_headers = headers_arrival_ns(response) or clock.t_headers
            if t_headers is not None:
                record.ttfb_ms = (t_headers - t0) / NS_PER_MS
            record.http_status = response.status_code
            if response.status_code >= 400:
                record.error_class = f"HTTP{response.status_code}"
                record.error = error_text(await response.aread())
                return record
            await consume(response, TokenTimes(record, t0))
            record.ok = record.e2e_ms is not None
            if not record.ok:
                raise StreamFault(ErrorClass.STREAM_CUT, "stream ended before the final chunk")
    except StreamFault as exc:
        record.error_class, record.error = exc.error_class, str(exc)
    except httpx.TimeoutException as exc:
        record.error_class, record.error = type(exc).__name__, str(exc) or "timed out"
    except httpx.HTTPError as exc:
        record.error_class, record.error = type(exc).__name__, str(exc) or type(exc).__name__
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # Well-formed JSON of the wrong shape (a list where an object belongs, a string duration).
        record.error_class, record.error = ErrorClass.MALFORMED_CHUNK, f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        record.ok = False
        record.error_class, record.error = ErrorClass.CANCELLED, "run stopped before the request finished"
        raise
    if record.error_class is not None:
        record.ok = False
    return record
