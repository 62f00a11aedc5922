"""Checks before any measured request: the server answers, has the model, and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from sentinel_exp.errors import ServerError
from sentinel_exp.servers import ServerHandle


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
            "sentinel.ollama_version": self.server_version,
            "sentinel.model_digest": self.digest,
            "sentinel.model_family": self.family,
            "sentinel.model_parameter_size": self.parameter_size,
            "sentinel.model_quantization": self.quantization_level,
            "sentinel.model_size_bytes": self.size_bytes,
        }
        return {k: str(v) for k, v in values.items() if v is not None}


def _names_match(wanted: str, listed: str) -> bool:
    # Ollama lists "tinyllama:latest" for a model pulled as "tinyllama".
    return listed == wanted or (":" not in wanted and listed == f"{wanted}:latest")


def _missing_model(handle: ServerHandle, model: str, available: list[str]) -> ServerError:
    have = ", ".join(sorted(available)) if available else "no models"
    hint = (
        f"Pull it with `ollama pull {model}`, or pick one it has with model.name=<tag>."
        if handle.kind == "ollama"
        else "Pick one it has with model.name=<tag>."
    )
    return ServerError(
        f"model '{model}' is not available on the {handle.kind} server at {handle.url} (it has: {have}). {hint}"
    )


async def _get_json(client: httpx.AsyncClient, method: str, path: str, handle: ServerHandle, **kwargs: Any) -> Any:
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


async def preflight(client: httpx.AsyncClient, handle: ServerHandle, model: str) -> ModelFacts:
    if handle.kind == "openai":
        return await _preflight_openai(client, handle, model)
    facts = ModelFacts(tag=model)
    version = await _get_json(client, "GET", "/api/version", handle)
    if not isinstance(version, dict):
        raise ServerError(f"{handle.url} does not answer like an Ollama server (GET /api/version failed)")
    facts.server_version = str(version.get("version"))
    tags = await _get_json(client, "GET", "/api/tags", handle) or {}
    listed = [m for m in tags.get("models", []) if isinstance(m, dict)]
    entry = next((m for m in listed if _names_match(model, str(m.get("name", m.get("model"))))), None)
    if entry is None:
        raise _missing_model(handle, model, [str(m.get("name")) for m in listed])
    facts.digest = entry.get("digest")
    facts.size_bytes = entry.get("size")
    show = await _get_json(client, "POST", "/api/show", handle, json={"model": model}) or {}
    details = show.get("details") or entry.get("details") or {}
    facts.family = details.get("family")
    facts.parameter_size = details.get("parameter_size")
    facts.quantization_level = details.get("quantization_level")
    info = show.get("model_info") or {}
    facts.context_length = next((v for k, v in info.items() if k.endswith(".context_length")), None)
    return facts


async def _preflight_openai(client: httpx.AsyncClient, handle: ServerHandle, model: str) -> ModelFacts:
    models = await _get_json(client, "GET", "/v1/models", handle)
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        ids = [str(m.get("id")) for m in models["data"] if isinstance(m, dict)]
        if ids and not any(_names_match(model, i) for i in ids):
            raise _missing_model(handle, model, ids)
    return ModelFacts(tag=model)


async def placement(client: httpx.AsyncClient, model: str) -> dict[str, float]:
    """Where the loaded model lives (/api/ps): size, size_vram and the fraction on the GPU."""
    try:
        response = await client.get("/api/ps")
        models = response.json().get("models", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return {}
    for entry in models:
        if _names_match(model, str(entry.get("name", entry.get("model")))):
            size, size_vram = entry.get("size") or 0, entry.get("size_vram") or 0
            out = {"model_size_mb": size / 2**20, "model_size_vram_mb": size_vram / 2**20}
            if size:
                out["gpu_offload_fraction"] = size_vram / size
            return out
    return {}
