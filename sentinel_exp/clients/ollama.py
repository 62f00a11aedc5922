"""Ollama's native streaming API: /api/chat and /api/generate, NDJSON (see docs/measurement.md, Ollama wire facts)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from sentinel_exp.clients.common import NS_PER_MS, RequestSpec, StreamFault, TokenTimes
from sentinel_exp.names import ErrorClass


def build_spec(
    api: str, model: str, prompt: str, prompt_index: int, system: str | None, options: dict[str, Any], keep_alive: Any
) -> RequestSpec:
    body: dict[str, Any] = {"model": model, "stream": True}
    if api == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
        path = "/api/chat"
    else:
        body["prompt"] = prompt
        if system:
            body["system"] = system
        path = "/api/generate"
    if options:
        body["options"] = options
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return RequestSpec(path, body, prompt_index)


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


def _handle_line(line: bytes, arrived: int, times: TokenTimes) -> bool:
    """Apply one NDJSON line; True once the final done:true chunk has been seen."""
    try:
        chunk = json.loads(line)
    except json.JSONDecodeError:
        raise StreamFault(ErrorClass.MALFORMED_CHUNK, f"not JSON: {line[:120]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamFault(ErrorClass.MALFORMED_CHUNK, f"not a JSON object: {line[:120]!r}")
    if "error" in chunk:
        raise StreamFault(ErrorClass.SERVER_ERROR, str(chunk["error"]))
    times.token(_token_text(chunk), arrived)
    if chunk.get("done"):
        _apply_final(chunk, times)
        times.finished(arrived)
        return True
    return False


async def consume_ndjson(response: httpx.Response, times: TokenTimes) -> None:
    pending = b""
    arrived = 0
    async for data in response.aiter_bytes():
        arrived = time.perf_counter_ns()
        pending += data
        while (newline := pending.find(b"\n")) >= 0:
            line, pending = pending[:newline], pending[newline + 1 :]
            if line.strip() and _handle_line(line, arrived, times):
                return
    # A last line without its newline still counts (the body ended, so it is complete).
    if pending.strip():
        _handle_line(pending, arrived, times)
