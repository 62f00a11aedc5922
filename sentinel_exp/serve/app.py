"""The Ollama-compatible HTTP application shared by every engine.

Headers go out with the first token, as Ollama's Go server does on its first flush, so TTFB
behaves as against Ollama (a cold load delays the first byte too) and an error raised before
the first token can still be a proper HTTP status.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
import typing
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel_exp.serve import DEFAULT_MAX_BODY_BYTES, wire
from sentinel_exp.serve.engine import Engine, EngineError, Finished, GenerationRequest, RawLine, Token
from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE_S, KeepAliveError, keep_alive_seconds
from sentinel_exp.serve.scheduler import ModelScheduler

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> None:
    """A field of the wrong JSON type is a 400, as Go's json.Unmarshal makes it in Ollama."""
    if key in data and data[key] is not None and not isinstance(data[key], kind):
        raise BadRequest(f"{key} must be {what} (got {type(data[key]).__name__})")


def _checked_messages(messages: Any, allow_empty: bool) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages must be an array of objects")
    if not messages and not allow_empty:
        raise BadRequest("messages must be a non-empty array of objects")
    for message in messages:
        for key in ("role", "content"):
            if key in message and message[key] is not None and not isinstance(message[key], str):
                raise BadRequest(f"messages: {key} must be a string (got {type(message[key]).__name__})")
    return messages


class OllamaApp:
    def __init__(
        self,
        engine: Engine,
        parallel: int = 1,
        version: str = "0.0.0",
        default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
    ) -> None:
        self.engine = engine
        self.scheduler = ModelScheduler(engine, parallel=parallel, default_keep_alive_s=default_keep_alive_s)
        self.version = version
        self._request_numbers = itertools.count(1)

    # --- metadata endpoints -----------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version_endpoint(self, request: Request) -> Response:
        return JSONResponse({"version": self.version})

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [wire.tags_entry(m) for m in self.engine.models()]})

    async def show(self, request: Request) -> Response:
        try:
            data = await read_json(request)
        except BadRequest as exc:
            return error_json(str(exc), exc.status)
        tag = data.get("model") or data.get("name")
        entry = self.scheduler.model_entry(tag) if isinstance(tag, str) and tag else None
        if entry is None:
            return error_json(f"model '{tag}' not found", 404)
        return JSONResponse(wire.show_response(entry))

    async def ps(self, request: Request) -> Response:
        resident = self.scheduler.resident
        models = []
        if resident is not None:
            entry = self.scheduler.model_entry(resident.tag)
            size, size_vram = self.engine.loaded_size(resident.handle)
            if entry is not None:
                models.append(
                    {
                        **wire.tags_entry(entry),
                        "size": size,
                        "size_vram": size_vram,
                        "expires_at": self.scheduler.ps_expires_at(resident),
                        "context_length": resident.runner_options.get("num_ctx"),
                    }
                )
        return JSONResponse({"models": models})

    async def openai_models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m.tag, "object": "model", "created": 0, "owned_by": "library"} for m in self.engine.models()
                ],
            }
        )

    # --- generation -------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        return await self._ollama_generation(request, "generate")

    async def chat(self, request: Request) -> Response:
        return await self._ollama_generation(request, "chat")

    def _parse_common(self, data: dict[str, Any]) -> tuple[str, dict[str, Any], float | None]:
        tag = data.get("model")
        if not tag or not isinstance(tag, str):
            raise BadRequest("model is required")
        _typed(data, "stream", bool, "true or false")
        _typed(data, "raw", bool, "true or false")
        _typed(data, "options", dict, "an object")
        try:
            keep_alive_s = keep_alive_seconds(data.get("keep_alive"))
        except KeepAliveError as exc:
            raise BadRequest(str(exc)) from None
        try:
            options = wire.validate_options(data.get("options"))
        except wire.OptionTypeError as exc:
            raise BadRequest(str(exc), status=500) from None
        if self.scheduler.model_entry(tag) is None:
            raise BadRequest(f"model '{tag}' not found", status=404)
        return tag, options, keep_alive_s

    async def _ollama_generation(self, request: Request, api: str) -> Response:
        started_ns = time.perf_counter_ns()
        try:
            data = await read_json(request)
            tag, options, keep_alive_s = self._parse_common(data)
            if api == "chat":
                messages = _checked_messages(data.get("messages") or [], allow_empty=True)
                empty = not messages
                gen = GenerationRequest(tag, messages=messages, options=options)
            else:
                _typed(data, "prompt", str, "a string")
                _typed(data, "system", str, "a string")
                prompt = data.get("prompt") or ""
                empty = prompt == ""
                messages = [{"role": "system", "content": data["system"]}] if data.get("system") else []
                messages.append({"role": "user", "content": prompt})
                gen = GenerationRequest(
                    tag, messages=messages, prompt=prompt, raw=bool(data.get("raw")), options=options
                )
        except BadRequest as exc:
            return error_json(str(exc), exc.status)

        runner = wire.runner_options(options)
        if empty:
            return await self._load_or_unload(api, tag, runner, keep_alive_s)

        gen.request_number = next(self._request_numbers)
        stream = data.get("stream", True) is not False
        events = self._events(gen, runner, keep_alive_s, started_ns)
        if stream:
            return await self._stream_ollama(api, tag, events)
        return await self._collect_ollama(api, tag, events)

    async def _load_or_unload(self, api: str, tag: str, runner: dict[str, Any], keep_alive_s: float | None) -> Response:
        try:
            if keep_alive_s == 0:
                await self.scheduler.unload_now(tag)
                return JSONResponse(wire.final_chunk(api, tag, "unload", None))
            await self.scheduler.load_only(tag, runner, keep_alive_s)
        except EngineError as exc:
            return error_json(str(exc), exc.status)
        return JSONResponse(wire.final_chunk(api, tag, "load", None))

    async def _events(
        self, gen: GenerationRequest, runner: dict[str, Any], keep_alive_s: float | None, started_ns: int
    ) -> AsyncGenerator[tuple[Token | Finished | RawLine, dict[str, Any] | None], None]:
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

    async def _stream_ollama(self, api: str, tag: str, events: AsyncGenerator[Any, None]) -> Response:
        make_chunk = wire.chat_chunk if api == "chat" else wire.generate_chunk

        def encode(event: Any, timing: dict[str, Any] | None) -> bytes:
            if isinstance(event, Token):
                return wire.dumps(make_chunk(tag, event.text, event.thinking)) + b"\n"
            if isinstance(event, Finished):
                return wire.dumps(wire.final_chunk(api, tag, event.done_reason, timing)) + b"\n"
            return typing.cast("bytes", event.data)

        return await self._stream(
            events,
            encode,
            NDJSON,
            error_line=lambda exc: wire.dumps({"error": str(exc)}) + b"\n",
            error_response=lambda exc: error_json(str(exc), exc.status),
        )

    async def _stream(
        self,
        events: AsyncGenerator[Any, None],
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

    async def _collect_ollama(self, api: str, tag: str, events: AsyncGenerator[Any, None]) -> Response:
        text: list[str] = []
        try:
            async for event, timing in events:
                if isinstance(event, Token) and not event.thinking:
                    text.append(event.text)
                elif isinstance(event, Finished):
                    return JSONResponse(wire.final_chunk(api, tag, event.done_reason, timing, "".join(text)))
        except EngineError as exc:
            return error_json(str(exc), exc.status)
        return error_json("generation ended without a result", 500)

    async def openai_chat(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        try:
            data = await read_json(request)
            tag = data.get("model")
            if not tag or not isinstance(tag, str):
                raise BadRequest("model is required")
            if self.scheduler.model_entry(tag) is None:
                raise BadRequest(f'model "{tag}" not found, try pulling it first', status=404)
            messages = _checked_messages(data.get("messages"), allow_empty=False)
            _typed(data, "stream", bool, "true or false")
            _typed(data, "stream_options", dict, "an object")
            options = wire.validate_options(
                {
                    "num_predict": data.get("max_completion_tokens", data.get("max_tokens")),
                    "temperature": data.get("temperature"),
                    "top_p": data.get("top_p"),
                    "seed": data.get("seed"),
                    "stop": [data["stop"]] if isinstance(data.get("stop"), str) else data.get("stop"),
                    "frequency_penalty": data.get("frequency_penalty"),
                    "presence_penalty": data.get("presence_penalty"),
                }
            )
        except (BadRequest, wire.OptionTypeError) as exc:
            status = getattr(exc, "status", 400)
            return JSONResponse(wire.openai_error(str(exc)), status_code=status)

        gen = GenerationRequest(tag, messages=messages, options=options, request_number=next(self._request_numbers))
        events = self._events(gen, wire.runner_options(options), None, started_ns)
        request_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        if data.get("stream") is not True:
            return await self._collect_openai(events, request_id, created, tag)

        role_sent = False

        def encode(event: Any, timing: Any) -> bytes:
            nonlocal role_sent
            out = b""
            if not role_sent:
                # As OpenAI does: a first delta that carries only the role.
                out += wire.sse(wire.openai_chunk(request_id, created, tag, {"role": "assistant", "content": ""}, None))
                role_sent = True
            if isinstance(event, Token):
                key = "reasoning" if event.thinking else "content"
                out += wire.sse(wire.openai_chunk(request_id, created, tag, {key: event.text}, None))
            elif isinstance(event, Finished):
                out += wire.sse(wire.openai_chunk(request_id, created, tag, {}, event.done_reason))
                if include_usage:
                    usage_chunk = wire.openai_chunk(request_id, created, tag, {}, None)
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = wire.openai_usage(event)
                    out += wire.sse(usage_chunk)
                out += wire.sse(b"[DONE]")
            else:
                out += event.data
            return out

        return await self._stream(
            events,
            encode,
            SSE,
            error_line=lambda exc: wire.sse(wire.openai_error(str(exc), "api_error")),
            error_response=lambda exc: JSONResponse(wire.openai_error(str(exc), "api_error"), status_code=exc.status),
        )

    async def _collect_openai(
        self, events: AsyncGenerator[Any, None], request_id: str, created: int, tag: str
    ) -> Response:
        text: list[str] = []
        try:
            async for event, _ in events:
                if isinstance(event, Token) and not event.thinking:
                    text.append(event.text)
                elif isinstance(event, Finished):
                    return JSONResponse(
                        {
                            "id": request_id,
                            "object": "chat.completion",
                            "created": created,
                            "model": tag,
                            "system_fingerprint": "fp_sentinel",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": "".join(text)},
                                    "finish_reason": event.done_reason,
                                }
                            ],
                            "usage": wire.openai_usage(event),
                        }
                    )
        except EngineError as exc:
            return JSONResponse(wire.openai_error(str(exc), "api_error"), status_code=exc.status)
        return JSONResponse(wire.openai_error("generation ended without a result", "api_error"), status_code=500)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 before a route reads it: by its
    Content-Length, or while reading a chunked one. The body read here is replayed to the route."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body larger than {self.max_bytes} bytes"
        body = wire.openai_error(message) if scope["path"].startswith("/v1/") else {"error": message}
        await JSONResponse(body, status_code=413)(scope, receive, send)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Still a 500, but in the error shape a client parses, not Starlette's plain text.
    message = f"internal error: {type(exc).__name__}: {exc}"
    if request.url.path.startswith("/v1/"):
        return JSONResponse(wire.openai_error(message, "api_error"), status_code=500)
    return error_json(message, 500)


class BearerAuth:
    """Requests to the OpenAI routes must carry `Authorization: Bearer <key>`, as vLLM's and
    llama.cpp's servers check with --api-key; Ollama's own routes stay open, as in Ollama."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = {"message": "invalid or missing API key", "type": "invalid_request_error", "code": 401}
                await JSONResponse({"error": error}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    engine: Engine,
    parallel: int = 1,
    version: str = "0.0.0",
    on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
    default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    api = OllamaApp(engine, parallel=parallel, version=version, default_keep_alive_s=default_keep_alive_s)
    routes = [
        Route("/", api.root, methods=["GET", "HEAD"]),
        Route("/api/version", api.version_endpoint, methods=["GET"]),
        Route("/api/tags", api.tags, methods=["GET"]),
        Route("/api/show", api.show, methods=["POST"]),
        Route("/api/ps", api.ps, methods=["GET"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Route("/api/chat", api.chat, methods=["POST"]),
        Route("/v1/chat/completions", api.openai_chat, methods=["POST"]),
        Route("/v1/models", api.openai_models, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await api.scheduler.shutdown()
        for hook in on_shutdown or []:
            await hook()

    middleware = [Middleware(BodyLimit, max_bytes=max_body_bytes)]
    if api_key:
        middleware.append(Middleware(BearerAuth, key=api_key))
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers={Exception: _unexpected_error}
    )
    app.state.ollama = api
    return app
