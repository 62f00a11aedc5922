"""Ollama's routes: `/`, `/api/version`, `/api/tags`, `/api/show`, `/api/ps`, and the generations
of `/api/generate` and `/api/chat` (NDJSON streams, or one answer with `stream: false`)."""

from __future__ import annotations

import time
import typing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sentinel_exp.serve import wire
from sentinel_exp.serve.engine import EngineError, Finished, GenerationRequest, Token
from sentinel_exp.serve.keepalive import KeepAliveError, keep_alive_seconds
from sentinel_exp.serve.routes import (
    NDJSON,
    BadRequest,
    Events,
    Generations,
    checked_messages,
    error_json,
    read_json,
    stream_response,
    typed,
)


class OllamaRoutes:
    def __init__(self, generations: Generations, version: str) -> None:
        self.generations = generations
        self.engine = generations.engine
        self.scheduler = generations.scheduler
        self.version = version

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version_endpoint, methods=["GET"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
        ]

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

    # --- generation -------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        return await self._generation(request, "generate")

    async def chat(self, request: Request) -> Response:
        return await self._generation(request, "chat")

    async def _generation(self, request: Request, api: str) -> Response:
        """A request without a prompt (or messages) only loads or unloads the model, as in Ollama."""
        started_ns = time.perf_counter_ns()
        try:
            data = await read_json(request)
            tag, options, keep_alive_s = self._parse_common(data)
            gen, empty = _chat_request(data, tag, options) if api == "chat" else _generate_request(data, tag, options)
        except BadRequest as exc:
            return error_json(str(exc), exc.status)

        runner = wire.runner_options(options)
        if empty:
            return await self._load_or_unload(api, tag, runner, keep_alive_s)

        gen.request_number = self.generations.next_number()
        events = self.generations.events(gen, runner, keep_alive_s, started_ns)
        if data.get("stream", True) is not False:
            return await self._stream(api, tag, events)
        return await self._collect(api, tag, events)

    def _parse_common(self, data: dict[str, Any]) -> tuple[str, dict[str, Any], float | None]:
        tag = data.get("model")
        if not tag or not isinstance(tag, str):
            raise BadRequest("model is required")
        typed(data, "stream", bool, "true or false")
        typed(data, "raw", bool, "true or false")
        typed(data, "options", dict, "an object")
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

    async def _load_or_unload(self, api: str, tag: str, runner: dict[str, Any], keep_alive_s: float | None) -> Response:
        try:
            if keep_alive_s == 0:
                await self.scheduler.unload_now(tag)
                return JSONResponse(wire.final_chunk(api, tag, "unload", None))
            await self.scheduler.load_only(tag, runner, keep_alive_s)
        except EngineError as exc:
            return error_json(str(exc), exc.status)
        return JSONResponse(wire.final_chunk(api, tag, "load", None))

    async def _stream(self, api: str, tag: str, events: Events) -> Response:
        make_chunk = wire.chat_chunk if api == "chat" else wire.generate_chunk

        def encode(event: Any, timing: dict[str, Any] | None) -> bytes:
            if isinstance(event, Token):
                return wire.dumps(make_chunk(tag, event.text, event.thinking)) + b"\n"
            if isinstance(event, Finished):
                return wire.dumps(wire.final_chunk(api, tag, event.done_reason, timing)) + b"\n"
            return typing.cast("bytes", event.data)

        return await stream_response(
            events,
            encode,
            NDJSON,
            error_line=lambda exc: wire.dumps({"error": str(exc)}) + b"\n",
            error_response=lambda exc: error_json(str(exc), exc.status),
        )

    async def _collect(self, api: str, tag: str, events: Events) -> Response:
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


def _chat_request(data: dict[str, Any], tag: str, options: dict[str, Any]) -> tuple[GenerationRequest, bool]:
    """/api/chat's generation, and whether it has no messages (a load or unload)."""
    messages = checked_messages(data.get("messages") or [], allow_empty=True)
    return GenerationRequest(tag, messages=messages, options=options), not messages


def _generate_request(data: dict[str, Any], tag: str, options: dict[str, Any]) -> tuple[GenerationRequest, bool]:
    """/api/generate's generation (its prompt as a user message after the system one), and
    whether the prompt is empty (a load or unload)."""
    typed(data, "prompt", str, "a string")
    typed(data, "system", str, "a string")
    prompt = data.get("prompt") or ""
    messages = [{"role": "system", "content": data["system"]}] if data.get("system") else []
    messages.append({"role": "user", "content": prompt})
    gen = GenerationRequest(tag, messages=messages, prompt=prompt, raw=bool(data.get("raw")), options=options)
    return gen, prompt == ""
