"""One interface per wire API: what a request looks like, what it cannot carry, how its stream
is read, and what the server says about the model through it (docs/architecture.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx

from sentinel_exp.clients.common import RequestSpec, StreamReader, TokenTimes
from sentinel_exp.clients.facts import ModelFacts
from sentinel_exp.errors import ServerError
from sentinel_exp.names import Api

if TYPE_CHECKING:
    from sentinel_exp.run.servers import ServerHandle

# Ollama's keep_alive: a duration string ("5m"), seconds, or a negative number for "forever".
KeepAlive = str | float | None

# Any: options are JSON values (numbers, strings, lists for `stop`) sent as given.
Options = dict[str, Any]

# Chat messages as given in a prompts file: {"role": ..., "content": ...} and whatever else they carry.
Messages = list[dict[str, Any]]


class PromptParts(Protocol):
    """What one request asks: a prompt, or a chat conversation in `messages` (sent as given after
    the system prompt; `text` is then unused), and the prompt's index in the workload's set."""

    @property
    def text(self) -> str: ...

    @property
    def prompt_index(self) -> int: ...

    @property
    def system(self) -> str | None: ...

    @property
    def messages(self) -> Messages | None: ...


@dataclass(frozen=True)
class Prompt:
    """PromptParts as given: `Prompt("why is the sky blue")`. (A run's come from workload.Planned.)"""

    text: str
    prompt_index: int = 0
    system: str | None = None
    messages: Messages | None = None


def chat_messages(prompt: str, system: str | None, messages: Messages | None = None) -> Messages:
    """The conversation of a chat request: the system prompt, then `messages` as given, or the
    prompt as one user message."""
    head = [{"role": "system", "content": system}] if system else []
    return head + (list(messages) if messages is not None else [{"role": "user", "content": prompt}])


class WireApi(ABC):
    """A wire API the client speaks. Instances are stateless and shared by every request."""

    name: ClassVar[Api]
    path: ClassVar[str]
    family: ClassVar[str]  # the API family as users name it in messages: "Ollama", "OpenAI"
    # Whether the final chunk carries the server's own load/prefill/decode durations.
    reports_server_durations: ClassVar[bool]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.path})"

    @abstractmethod
    def build_request(self, model: str, prompt: PromptParts, options: Options, keep_alive: KeepAlive) -> RequestSpec:
        """The request for one prompt or chat conversation; options and keep_alive this API cannot
        carry are left out. ValueError when the API cannot carry `messages` (/api/generate)."""

    @abstractmethod
    def unsendable(self, options: Options, keep_alive: KeepAlive) -> list[str]:
        """The names of the options (and keep_alive) this API has no field for, in report order."""

    @abstractmethod
    def reader(self, times: TokenTimes) -> StreamReader:
        """A reader of one response's stream into `times`."""

    @abstractmethod
    async def preflight(self, client: httpx.AsyncClient, handle: ServerHandle, model: str) -> ModelFacts:
        """Check the server answers and has `model`, and read what it says about it."""

    @abstractmethod
    async def placement(self, client: httpx.AsyncClient, model: str) -> dict[str, float]:
        """Where the loaded model lives (sizes, GPU fraction); {} when this API cannot tell."""

    async def unload(self, client: httpx.AsyncClient, model: str, timeout_s: float) -> None:
        """Unload `model` and return once the server no longer lists it as loaded."""
        raise ServerError(f"the {self.family} API has no way to unload a model (workload.cold_start needs Ollama's)")
