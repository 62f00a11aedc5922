"""The HTTP application of a bundled server: Ollama's routes (ollama_routes.py) and OpenAI's
(openai_routes.py) over one engine (routes.Generations), a request body limit for every route,
an API key for the OpenAI ones, and errors in the shape each API's clients parse."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinel_exp.serve import DEFAULT_MAX_BODY_BYTES, wire
from sentinel_exp.serve.engine import Engine
from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE_S
from sentinel_exp.serve.ollama_routes import OllamaRoutes
from sentinel_exp.serve.openai_routes import OpenAIRoutes
from sentinel_exp.serve.routes import Generations, error_json


@dataclass(frozen=True)
class AppSettings:
    parallel: int = 1  # generations at once (slots)
    version: str = "0.0.0"  # what /api/version answers
    default_keep_alive_s: float = DEFAULT_KEEP_ALIVE_S  # a model's residency when a request names none
    api_key: str | None = None  # required of the OpenAI routes when set
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


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
    settings: AppSettings = AppSettings(),
    on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
) -> Starlette:
    generations = Generations(engine, settings.parallel, settings.default_keep_alive_s)
    routes = [*OllamaRoutes(generations, settings.version).routes(), *OpenAIRoutes(generations).routes()]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await generations.scheduler.shutdown()
        for hook in on_shutdown or []:
            await hook()

    middleware = [Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    if settings.api_key:
        middleware.append(Middleware(BearerAuth, key=settings.api_key))
    app = Starlette(
        routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers={Exception: _unexpected_error}
    )
    app.state.generations = generations
    return app
