"""What preflight learns about the model, and the helpers every API's preflight shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from sentinel_exp import tags as tag
from sentinel_exp.errors import ServerError
from sentinel_exp.names import ServerKind

if TYPE_CHECKING:
    from sentinel_exp.run.servers import ServerHandle


@dataclass
class ModelFacts:
    tag: str
    server_version: str | None = None
    digest: str | None = None
    size_bytes: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None
    context_length: int | None = None

    def tags(self) -> dict[str, str]:
        values = {
            tag.OLLAMA_VERSION: self.server_version,
            tag.MODEL_DIGEST: self.digest,
            tag.MODEL_FAMILY: self.family,
            tag.MODEL_PARAMETER_SIZE: self.parameter_size,
            tag.MODEL_QUANTIZATION: self.quantization_level,
            tag.MODEL_SIZE_BYTES: self.size_bytes,
        }
        return {k: str(v) for k, v in values.items() if v is not None}


def names_match(wanted: str, listed: str) -> bool:
    # Ollama lists "tinyllama:latest" for a model pulled as "tinyllama".
    return listed == wanted or (":" not in wanted and listed == f"{wanted}:latest")


def missing_model(handle: ServerHandle, model: str, available: list[str]) -> ServerError:
    have = ", ".join(sorted(available)) if available else "no models"
    hint = (
        f"Pull it with `ollama pull {model}`, or pick one it has with model.name=<tag>."
        if handle.kind == ServerKind.ollama
        else "Pick one it has with model.name=<tag>."
    )
    return ServerError(
        f"model '{model}' is not available on the {handle.kind} server at {handle.url} (it has: {have}). {hint}"
    )


# Any: the parsed JSON of a server's answer, whose shape each caller checks before use.
async def get_json(client: httpx.AsyncClient, method: str, path: str, handle: ServerHandle, **kwargs: Any) -> Any:
    """The JSON a server answers, or None for an error status or a body that is not JSON;
    a server that does not answer at all is a ServerError."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ServerError(f"the {handle.kind} server at {handle.url} did not answer {method} {path}: {exc}") from None
    if response.status_code >= 400:
        return None
    try:
        return response.json()
    except ValueError:
        return None
