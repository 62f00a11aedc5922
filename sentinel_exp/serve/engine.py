"""What an inference engine offers the Ollama-compatible HTTP layer.

The HTTP layer owns the wire format, keep_alive and the request queue; an engine only loads
models, unloads them and streams tokens. Both the simulated and the llama.cpp engine implement
this, so the two servers answer with exactly the same shapes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelEntry:
    """A model the engine can serve, as /api/tags and /api/show describe it."""

    tag: str
    size_bytes: int
    digest: str
    modified_at: str
    family: str
    parameter_size: str
    quantization_level: str
    format: str = "gguf"
    context_length: int | None = None
    template: str = ""
    model_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationRequest:
    """One generation, already validated by the HTTP layer."""

    model: str
    # Chat messages ({"role", "content"}); /api/generate is turned into one user message
    # unless `raw` is set, in which case `prompt` is sent untemplated.
    messages: list[dict[str, Any]]
    prompt: str | None = None
    raw: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # Count of generation requests this server has received, 1-based (for scripted faults).
    request_number: int = 0
    # perf_counter_ns from which the engine's own time runs: the request's arrival when the
    # model was ready and free, else the moment it became so (after a load or a queue).
    clock_start_ns: int = 0


@dataclass
class Token:
    text: str
    thinking: bool = False


@dataclass
class Finished:
    done_reason: str
    prompt_eval_count: int
    eval_count: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int


@dataclass
class RawLine:
    """Bytes written as-is (the simulated server's malformed-line fault)."""

    data: bytes


class EngineError(Exception):
    """Generation failed; before the first token it is an HTTP error, after it an error line."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class AbortConnection(Exception):
    """Drop the connection without finishing the response (a cut stream)."""


Event = Token | Finished | RawLine


class Engine(Protocol):
    name: str

    def models(self) -> list[ModelEntry]: ...

    async def load(self, tag: str, runner_options: dict[str, Any]) -> Any:
        """Load `tag` with these runner options; returns an engine handle."""

    async def unload(self, handle: Any) -> None: ...

    def loaded_size(self, handle: Any) -> tuple[int, int]:
        """(size, size_vram) in bytes of a loaded model, as /api/ps reports."""

    def generate(self, handle: Any, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """Stream tokens, then one Finished. Raises EngineError or AbortConnection."""
