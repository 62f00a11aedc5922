"""OpenAI's routes: `/v1/models`, and `/v1/chat/completions` (SSE chunks with `stream: true`, one
chat.completion object without)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sentinel_exp.serve import wire
from sentinel_exp.serve.engine import EngineError, Finished, GenerationRequest, Token
from sentinel_exp.serve.routes import (
    SSE,
    BadRequest,
    Events,
    Generations,
    checked_messages,
    read_json,
    stream_response,
    typed,
)


@dataclass(frozen=True)
class ChatCompletion:
    """A checked /v1/chat/completions request, and the id and time its answer carries."""

    tag: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts
    request_id: str
    created: int


class OpenAIRoutes:
    def __init__(self, generations: Generations) -> None:
        self.generations = generations

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        models = self.generations.engine.models()
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m.tag, "object": "model", "created": 0, "owned_by": "library"} for m in models],
            }
        )

    async def chat_completions(self, request: Request) -> Response:
        started_ns = time.perf_counter_ns()
        try:
            chat = self._checked(await read_json(request))
        except (BadRequest, wire.OptionTypeError) as exc:
            status = getattr(exc, "status", 400)
            return JSONResponse(wire.openai_error(str(exc)), status_code=status)
        gen = GenerationRequest(
            chat.tag, messages=chat.messages, options=chat.options, request_number=self.generations.next_number()
        )
        events = self.generations.events(gen, wire.runner_options(chat.options), None, started_ns)
        if not chat.stream:
            return await _collect(events, chat)
        return await stream_response(
            events,
            SseChunks(chat),
            SSE,
            error_line=lambda exc: wire.sse(wire.openai_error(str(exc), "api_error")),
            error_response=lambda exc: JSONResponse(wire.openai_error(str(exc), "api_error"), status_code=exc.status),
        )

    def _checked(self, data: dict[str, Any]) -> ChatCompletion:
        """The request's model, messages and options, as OpenAI's API names them, checked."""
        tag = data.get("model")
        if not tag or not isinstance(tag, str):
            raise BadRequest("model is required")
        if self.generations.scheduler.model_entry(tag) is None:
            raise BadRequest(f'model "{tag}" not found, try pulling it first', status=404)
        messages = checked_messages(data.get("messages"), allow_empty=False)
        typed(data, "stream", bool, "true or false")
        typed(data, "stream_options", dict, "an object")
        return ChatCompletion(
            tag,
            messages,
            wire.validate_options(_ollama_options(data)),
            stream=data.get("stream") is True,
            include_usage=bool((data.get("stream_options") or {}).get("include_usage")),
            request_id=f"chatcmpl-{uuid.uuid4().hex[:12]}",
            created=int(time.time()),
        )


def _ollama_options(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's sampling fields under the option names the engines take."""
    return {
        "num_predict": data.get("max_completion_tokens", data.get("max_tokens")),
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "seed": data.get("seed"),
        "stop": [data["stop"]] if isinstance(data.get("stop"), str) else data.get("stop"),
        "frequency_penalty": data.get("frequency_penalty"),
        "presence_penalty": data.get("presence_penalty"),
    }


class SseChunks:
    """Each engine event as chat.completion.chunk events, the first preceded by one that carries
    only the role (as OpenAI does); the end adds the usage chunk when asked for, then [DONE]."""

    def __init__(self, chat: ChatCompletion) -> None:
        self.chat = chat
        self.role_sent = False

    def chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return wire.openai_chunk(self.chat.request_id, self.chat.created, self.chat.tag, delta, finish_reason)

    def __call__(self, event: Any, timing: Any) -> bytes:
        out = b""
        if not self.role_sent:
            out += wire.sse(self.chunk({"role": "assistant", "content": ""}, None))
            self.role_sent = True
        if isinstance(event, Token):
            out += wire.sse(self.chunk({"reasoning" if event.thinking else "content": event.text}, None))
        elif isinstance(event, Finished):
            out += self._end(event)
        else:
            out += event.data
        return out

    def _end(self, event: Finished) -> bytes:
        out = wire.sse(self.chunk({}, event.done_reason))
        if self.chat.include_usage:
            usage_chunk = self.chunk({}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = wire.openai_usage(event)
            out += wire.sse(usage_chunk)
        return out + wire.sse(b"[DONE]")


async def _collect(events: Events, chat: ChatCompletion) -> Response:
    """The whole answer as one chat.completion object."""
    text: list[str] = []
    try:
        async for event, _ in events:
            if isinstance(event, Token) and not event.thinking:
                text.append(event.text)
            elif isinstance(event, Finished):
                return JSONResponse(_completion(chat, "".join(text), event))
    except EngineError as exc:
        return JSONResponse(wire.openai_error(str(exc), "api_error"), status_code=exc.status)
    return JSONResponse(wire.openai_error("generation ended without a result", "api_error"), status_code=500)


def _completion(chat: ChatCompletion, text: str, event: Finished) -> dict[str, Any]:
    return {
        "id": chat.request_id,
        "object": "chat.completion",
        "created": chat.created,
        "model": chat.tag,
        "system_fingerprint": "fp_sentinel",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": event.done_reason,
            }
        ],
        "usage": wire.openai_usage(event),
    }
