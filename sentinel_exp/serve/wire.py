"""Ollama and OpenAI wire shapes, as pure functions (see docs/measurement.md, Ollama and OpenAI wire facts).

Kept apart from the HTTP handlers so that the streaming and the non-streaming paths, and the
two engines, produce byte-for-byte the same field sets.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sentinel_exp.serve.engine import Finished, ModelEntry

# Ollama's option names and the JSON types it accepts for them (api/types.go Options/Runner).
_INT_OPTIONS = (
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "mirostat",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
)
_FLOAT_OPTIONS = (
    "tfs_z",
    "typical_p",
    "top_p",
    "min_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
)
_BOOL_OPTIONS = ("penalize_newline", "numa", "low_vram", "f16_kv", "vocab_only", "use_mmap", "use_mlock")
OPTION_TYPES: dict[str, type] = {
    **dict.fromkeys(_INT_OPTIONS, int),
    **dict.fromkeys(_FLOAT_OPTIONS, float),
    **dict.fromkeys(_BOOL_OPTIONS, bool),
    "stop": list,
}

RUNNER_DEFAULTS: dict[str, Any] = {
    "num_ctx": 2048,
    "num_batch": 512,
    "num_gpu": -1,
    "main_gpu": 0,
    "num_thread": 0,
    "use_mmap": None,
}

_TYPE_WORDS = {int: "integer", float: "float32", bool: "boolean", list: "array"}


class OptionTypeError(ValueError):
    pass


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def validate_options(options: Any) -> dict[str, Any]:
    """Type-check options as Ollama does; unknown names are ignored (Ollama only warns)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise OptionTypeError("options must be an object")
    clean: dict[str, Any] = {}
    for key, value in options.items():
        expected = OPTION_TYPES.get(key)
        if expected is None or value is None:
            continue
        if expected is int and isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = int(value)
        elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = float(value)
        elif expected is bool and isinstance(value, bool):
            clean[key] = value
        elif expected is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            clean[key] = list(value)
        else:
            raise OptionTypeError(f"option {key!r} must be of type {_TYPE_WORDS[expected]}")
    return clean


def runner_options(options: dict[str, Any]) -> dict[str, Any]:
    """The load-time options, defaults filled in, so "unset" equals "set to the default"."""
    return {k: options.get(k, default) for k, default in RUNNER_DEFAULTS.items()}


def durations(finished: Finished, load_ns: int, total_ns: int) -> dict[str, Any]:
    return {
        "total_duration": total_ns,
        "load_duration": load_ns,
        "prompt_eval_count": finished.prompt_eval_count,
        "prompt_eval_duration": finished.prompt_eval_duration_ns,
        "eval_count": finished.eval_count,
        "eval_duration": finished.eval_duration_ns,
    }


def generate_chunk(model: str, text: str, thinking: bool = False) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "model": model,
        "created_at": now_rfc3339(),
        "response": "" if thinking else text,
        "done": False,
    }
    if thinking:
        chunk["thinking"] = text
    return chunk


def chat_chunk(model: str, text: str, thinking: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "" if thinking else text}
    if thinking:
        message["thinking"] = text
    return {"model": model, "created_at": now_rfc3339(), "message": message, "done": False}


def final_chunk(
    api: str, model: str, done_reason: str, timing: dict[str, Any] | None, text: str = ""
) -> dict[str, Any]:
    """The done:true object; `text` is the whole answer for stream:false responses."""
    chunk: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if api == "chat":
        chunk["message"] = {"role": "assistant", "content": text}
    else:
        chunk["response"] = text
    chunk["done"] = True
    chunk["done_reason"] = done_reason
    if timing:
        chunk.update(timing)
    return chunk


def model_details(entry: ModelEntry) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": entry.format,
        "family": entry.family,
        "families": [entry.family],
        "parameter_size": entry.parameter_size,
        "quantization_level": entry.quantization_level,
    }


def tags_entry(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.tag,
        "model": entry.tag,
        "modified_at": entry.modified_at,
        "size": entry.size_bytes,
        "digest": entry.digest,
        "details": model_details(entry),
    }


def show_response(entry: ModelEntry) -> dict[str, Any]:
    info = dict(entry.model_info)
    if entry.context_length is not None:
        info.setdefault(f"{entry.family}.context_length", entry.context_length)
    return {
        "license": "",
        "modelfile": f"FROM {entry.tag}\n",
        "parameters": "",
        "template": entry.template,
        "details": model_details(entry),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": entry.modified_at,
    }


# --- OpenAI-compatible shapes (/v1/chat/completions) -------------------------------------


def openai_chunk(
    request_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_sentinel",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def openai_usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_eval_count,
        "completion_tokens": finished.eval_count,
        "total_tokens": finished.prompt_eval_count + finished.eval_count,
    }


def openai_error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else dumps(obj)) + b"\n\n"
