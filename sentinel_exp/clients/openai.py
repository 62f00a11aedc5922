"""OpenAI-compatible /v1/chat/completions, streamed as server-sent events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from sentinel_exp.clients.base import KeepAlive, Options, PromptParts, WireApi, chat_messages
from sentinel_exp.clients.common import RequestSpec, StreamFault, StreamReader, TokenTimes, json_object
from sentinel_exp.clients.facts import ModelFacts, get_json, missing_model, names_match
from sentinel_exp.clients.framing import Framing
from sentinel_exp.errors import ServerError
from sentinel_exp.names import Api, ErrorClass

if TYPE_CHECKING:
    from sentinel_exp.run.servers import ServerHandle

# The Ollama options that have an OpenAI field; runner options (num_ctx, num_gpu, ...) have none.
_OPTION_TO_OPENAI = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class SseReader(StreamReader):
    """One JSON chunk in each event's data. The stream is complete at `[DONE]`; for a server that
    sends none, at the chunk with finish_reason (or the usage chunk after it) once the body ends."""

    framing = Framing.SSE

    def __init__(self, times: TokenTimes) -> None:
        super().__init__(times)
        self.finished_at = 0

    def feed(self, frame: bytes | str, arrived: int) -> bool:
        data = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        if data == "[DONE]":
            self.times.finished(arrived)
            return True
        if not data.strip():
            return False  # an event with no JSON in it (a keep-alive) carries no token
        chunk = json_object(data)
        if "error" in chunk:
            err = chunk["error"]
            raise StreamFault(ErrorClass.SERVER_ERROR, str(err.get("message", err) if isinstance(err, dict) else err))
        record = self.times.record
        usage = chunk.get("usage")
        if usage:
            record.prompt_eval_count = usage.get("prompt_tokens")
            record.eval_count = usage.get("completion_tokens")
            self.finished_at = self.finished_at and arrived
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            # The first delta carries only the role: not a token (docs/measurement.md).
            self.times.token(
                delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or "", arrived
            )
            if choice.get("finish_reason"):
                record.done_reason = choice["finish_reason"]
                self.finished_at = arrived
        return False

    def end(self) -> None:
        if self.finished_at:
            self.times.finished(self.finished_at)


class OpenAIChat(WireApi):
    name = Api.openai
    path = "/v1/chat/completions"
    family = "OpenAI"
    reports_server_durations = False  # only token counts, in the `usage` chunk

    def build_request(self, model: str, prompt: PromptParts, options: Options, keep_alive: KeepAlive) -> RequestSpec:
        body: dict[str, Any] = {
            "model": model,
            "messages": chat_messages(prompt.text, prompt.system, prompt.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for name, value in options.items():
            if name in _OPTION_TO_OPENAI:
                body[_OPTION_TO_OPENAI[name]] = value
        return RequestSpec(self.path, body, prompt.prompt_index)

    def unsendable(self, options: Options, keep_alive: KeepAlive) -> list[str]:
        unsent = sorted(name for name in options if name not in _OPTION_TO_OPENAI)
        if keep_alive is not None:
            unsent.append("keep_alive")
        return unsent

    def reader(self, times: TokenTimes) -> StreamReader:
        return SseReader(times)

    async def preflight(self, client: httpx.AsyncClient, handle: ServerHandle, model: str) -> ModelFacts:
        """/v1/models names the models, nothing more; a server that does not list them is trusted,
        unless the chat path itself is not there (a wrong server.url: every request would 404)."""
        models = await get_json(client, "GET", "/v1/models", handle)
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            ids = [str(m.get("id")) for m in models["data"] if isinstance(m, dict)]
            if ids and not any(names_match(model, i) for i in ids):
                raise missing_model(handle, model, ids)
        elif await self._path_missing(client, handle):
            raise ServerError(
                f"no OpenAI API at {handle.url}: POST {self.path} answers 404 Not Found. server.url is the "
                f"server's base URL, with or without /v1 (e.g. http://127.0.0.1:8000 or http://127.0.0.1:8000/v1)"
            )
        return ModelFacts(tag=model)

    async def _path_missing(self, client: httpx.AsyncClient, handle: ServerHandle) -> bool:
        # An empty body generates nothing: a server with the route answers 400/422, one without 404.
        try:
            response = await client.post(self.path, json={})
        except httpx.HTTPError as exc:
            raise ServerError(f"the openai server at {handle.url} did not answer POST {self.path}: {exc}") from None
        return response.status_code in (404, 405)

    async def placement(self, client: httpx.AsyncClient, model: str) -> dict[str, float]:
        return {}  # the OpenAI API has no counterpart of /api/ps
