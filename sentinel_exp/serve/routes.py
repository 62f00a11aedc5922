"""What the Ollama routes (ollama_routes.py) and the OpenAI routes (openai_routes.py) share: a
request's JSON and its checks, the engine's events of one generation as the scheduler admits it,
and a streamed answer.

Headers go out with the first token, as Ollama's Go server does on its first flush, so TTFB
behaves as against Ollama (a cold load delays the first byte too) and an error raised before
the first token can still be a proper HTTP status.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sentinel_exp.serve import wire
from sentinel_exp.serve.engine import Engine, EngineError, Finished, GenerationRequest, RawLine, Token
from sentinel_exp.serve.scheduler import ModelScheduler

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

# One engine event, and Ollama's duration fields with the Finished one.
Event = tuple[Token | Finished | RawLine, dict[str, Any] | None]
Events = AsyncGenerator[Event, None]


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def error_json(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> None:
    """A field of the wrong JSON type is a 400, as Go's json.Unmarshal makes it in Ollama."""
    if key in data and data[key] is not None and not isinstance(data[key], kind):
        raise BadRequest(f"{key} must be {what} (got {type(data[key]).__name__})")


def checked_messages(messages: Any, allow_empty: bool) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages must be an array of objects")
    if not messages and not allow_empty:
        raise BadRequest("messages must be a non-empty array of objects")
    for message in messages:
        for key in ("role", "content"):
            if key in message and message[key] is not None and not isinstance(message[key], str):
                raise BadRequest(f"messages: {key} must be a string (got {type(message[key]).__name__})")
    return messages


class Generations:
    """The engine both APIs serve from: the scheduler that keeps a model resident and hands out
    slots, and a number for each generation."""

    def __init__(self, engine: Engine, parallel: int, default_keep_alive_s: float) -> None:
        self.engine = engine
        self.scheduler = ModelScheduler(engine, parallel=parallel, default_keep_alive_s=default_keep_alive_s)
        self._request_numbers = itertools.count(1)

    def next_number(self) -> int:
        return next(self._request_numbers)

    async def events(
        self, gen: GenerationRequest, runner: dict[str, Any], keep_alive_s: float | None, started_ns: int
    ) -> Events:
        """Engine events; the Finished one comes with Ollama's duration fields."""
        async with self.scheduler.admit(gen.model, runner, keep_alive_s) as admission:
            load_ns = admission.ready_ns - started_ns
            # Prefill is timed from when the model was ready and a slot free, as llama-server's
            # prompt_ms is: load_duration and prompt_eval_duration do not overlap.
            gen.clock_start_ns = max(admission.ready_ns, admission.blocked_until_ns)
            # Closed here, inside admission, so the slot is freed only once the engine has stopped.
            async with aclosing(self.engine.generate(admission.resident.handle, gen)) as stream:
                async for event in stream:
                    if isinstance(event, Finished):
                        yield event, wire.durations(event, load_ns, time.perf_counter_ns() - started_ns)
                    else:
                        yield event, None


class DeferredStream(Response):
    """Streams `rest` after `first`; stops generating when the client goes away."""

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes, None], media_type: str) -> None:
        self.first = first
        self.rest = rest
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({"cache-control": "no-cache"} if media_type == SSE else {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        client_gone = False

        async def watch_disconnect() -> None:
            nonlocal client_gone
            while (await receive())["type"] != "http.disconnect":
                pass
            client_gone = True
            if me is not None:
                me.cancel()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            # The server's own clock (CLOCK_MONOTONIC, as time.perf_counter_ns) just before the
            # first token goes out: a client on this machine can measure its own read latency.
            stamp = (b"x-sentinel-first-chunk-ns", str(time.perf_counter_ns()).encode())
            await send({"type": "http.response.start", "status": 200, "headers": [*self.raw_headers, stamp]})
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            async for chunk in self.rest:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not client_gone:
                raise
        finally:
            watcher.cancel()
            await self.rest.aclose()


async def stream_response(
    events: Events,
    encode: Callable[[Any, Any], bytes],
    media_type: str,
    error_line: Callable[[EngineError], bytes],
    error_response: Callable[[EngineError], Response],
) -> Response:
    """An engine failure before the first token is an HTTP error; after it, one error line."""
    try:
        event, timing = await events.__anext__()
    except EngineError as exc:
        await events.aclose()
        return error_response(exc)

    async def rest() -> AsyncGenerator[bytes, None]:
        try:
            async for event, timing in events:
                yield encode(event, timing)
        except EngineError as exc:
            yield error_line(exc)
        finally:
            await events.aclose()

    return DeferredStream(encode(event, timing), rest(), media_type)
