"""Ollama's native streaming API: /api/chat and /api/generate, NDJSON (see docs/measurement.md, Ollama wire facts)."""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import httpx

from sentinel_exp.clients.base import KeepAlive, Messages, Options, PromptParts, WireApi, chat_messages
from sentinel_exp.clients.common import NS_PER_MS, RequestSpec, StreamFault, StreamReader, TokenTimes, json_object
from sentinel_exp.clients.facts import ModelFacts, get_json, missing_model, names_match
from sentinel_exp.clients.framing import Framing
from sentinel_exp.errors import ServerError
from sentinel_exp.names import Api, ErrorClass

if TYPE_CHECKING:
    from sentinel_exp.run.servers import ServerHandle


# Any: a parsed NDJSON chunk; its fields are read with .get and checked where it matters.
def _token_text(chunk: dict[str, Any]) -> str:
    message = chunk.get("message")
    if isinstance(message, dict):
        return message.get("content") or message.get("thinking") or ""
    return chunk.get("response") or chunk.get("thinking") or ""


def _apply_final(chunk: dict[str, Any], times: TokenTimes) -> None:
    record = times.record
    record.done_reason = chunk.get("done_reason")
    record.prompt_eval_count = chunk.get("prompt_eval_count")
    record.eval_count = chunk.get("eval_count")
    for field in ("load_duration", "prompt_eval_duration", "eval_duration", "total_duration"):
        value = chunk.get(field)
        if value is not None:
            setattr(record, f"{field}_ms", value / NS_PER_MS)


class NdjsonReader(StreamReader):
    """One NDJSON line a chunk; the stream is complete at the chunk with done:true."""

    framing = Framing.NDJSON

    def feed(self, frame: bytes | str, arrived: int) -> bool:
        chunk = json_object(frame)
        if "error" in chunk:
            raise StreamFault(ErrorClass.SERVER_ERROR, str(chunk["error"]))
        self.times.token(_token_text(chunk), arrived)
        if chunk.get("done"):
            _apply_final(chunk, self.times)
            self.times.finished(arrived)
            return True
        return False


class OllamaApi(WireApi):
    """What /api/chat and /api/generate share: every option and keep_alive go on the wire, the
    stream is NDJSON with server durations in its final chunk, and the server answers
    /api/version, /api/tags, /api/show and /api/ps about its models."""

    family = "Ollama"
    reports_server_durations = True

    @abstractmethod
    def _put_prompt(self, body: dict[str, Any], prompt: str, system: str | None, messages: Messages | None) -> None:
        """Add the prompt or messages (and system prompt) to `body` the way this endpoint takes them."""

    def build_request(self, model: str, prompt: PromptParts, options: Options, keep_alive: KeepAlive) -> RequestSpec:
        body: dict[str, Any] = {"model": model, "stream": True}
        self._put_prompt(body, prompt.text, prompt.system, prompt.messages)
        if options:
            body["options"] = options
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return RequestSpec(self.path, body, prompt.prompt_index)

    def unsendable(self, options: Options, keep_alive: KeepAlive) -> list[str]:
        return []

    def reader(self, times: TokenTimes) -> StreamReader:
        return NdjsonReader(times)

    async def preflight(self, client: httpx.AsyncClient, handle: ServerHandle, model: str) -> ModelFacts:
        facts = ModelFacts(tag=model)
        version = await get_json(client, "GET", "/api/version", handle)
        if not isinstance(version, dict):
            raise ServerError(f"{handle.url} does not answer like an Ollama server (GET /api/version failed)")
        facts.server_version = str(version.get("version"))
        tags = await get_json(client, "GET", "/api/tags", handle) or {}
        listed = [m for m in tags.get("models", []) if isinstance(m, dict)]
        entry = next((m for m in listed if names_match(model, str(m.get("name", m.get("model"))))), None)
        if entry is None:
            raise missing_model(handle, model, [str(m.get("name")) for m in listed])
        facts.digest = entry.get("digest")
        facts.size_bytes = entry.get("size")
        show = await get_json(client, "POST", "/api/show", handle, json={"model": model}) or {}
        details = show.get("details") or entry.get("details") or {}
        facts.family = details.get("family")
        facts.parameter_size = details.get("parameter_size")
        facts.quantization_level = details.get("quantization_level")
        info = show.get("model_info") or {}
        facts.context_length = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        return facts

    async def placement(self, client: httpx.AsyncClient, model: str) -> dict[str, float]:
        """From /api/ps: size, size_vram and the fraction on the GPU."""
        entry = _find(model, await _loaded_models(client))
        if entry is None:
            return {}
        size, size_vram = entry.get("size") or 0, entry.get("size_vram") or 0
        out = {"model_size_mb": size / 2**20, "model_size_vram_mb": size_vram / 2**20}
        if size:
            out["gpu_offload_fraction"] = size_vram / size
        return out

    async def unload(self, client: httpx.AsyncClient, model: str, timeout_s: float) -> None:
        """Ollama's unload: an empty /api/generate with keep_alive 0, which answers at once; the
        model is gone once /api/ps stops listing it (a busy one unloads when its requests end)."""
        try:
            response = await client.post("/api/generate", json={"model": model, "keep_alive": 0})
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
            raise ServerError(f"could not unload {model} for workload.cold_start: {why}") from None
        if response.status_code != 200:
            raise ServerError(
                f"could not unload {model} for workload.cold_start: HTTP {response.status_code} {response.text[:200]}"
            )
        deadline = time.perf_counter() + timeout_s
        while True:
            loaded = await _loaded_models(client)
            if loaded is not None and _find(model, loaded) is None:
                return
            if time.perf_counter() >= deadline:
                raise ServerError(
                    f"{model} was still loaded {timeout_s:g} s after the unload request (/api/ps lists it): "
                    f"workload.cold_start cannot make the next request cold"
                )
            await asyncio.sleep(UNLOAD_POLL_S)


# How often /api/ps is asked whether an unloaded model is gone: short beside any model load.
UNLOAD_POLL_S = 0.01


async def _loaded_models(client: httpx.AsyncClient) -> list[dict[str, Any]] | None:
    """The models /api/ps lists as loaded; None when the server did not say."""
    try:
        response = await client.get("/api/ps")
        models = response.json().get("models", []) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else None


def _find(model: str, loaded: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return next((m for m in loaded or [] if names_match(model, str(m.get("name", m.get("model"))))), None)


class OllamaChat(OllamaApi):
    name = Api.chat
    path = "/api/chat"

    def _put_prompt(self, body: dict[str, Any], prompt: str, system: str | None, messages: Messages | None) -> None:
        body["messages"] = chat_messages(prompt, system, messages)


class OllamaGenerate(OllamaApi):
    name = Api.generate
    path = "/api/generate"

    def _put_prompt(self, body: dict[str, Any], prompt: str, system: str | None, messages: Messages | None) -> None:
        if messages is not None:
            raise ValueError("/api/generate takes one prompt, not chat messages: use workload.api=chat or openai")
        body["prompt"] = prompt
        if system:
            body["system"] = system
