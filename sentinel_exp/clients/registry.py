"""The wire APIs by name, and which of them a run speaks to its server."""

from __future__ import annotations

from typing import NamedTuple

from sentinel_exp.clients.base import KeepAlive, Options, WireApi
from sentinel_exp.clients.ollama import OllamaChat, OllamaGenerate
from sentinel_exp.clients.openai import OpenAIChat
from sentinel_exp.names import Api, ServerKind

WIRE_APIS: dict[Api, WireApi] = {api.name: api for api in (OllamaChat(), OllamaGenerate(), OpenAIChat())}


def wire_api(api: str) -> WireApi:
    """The client for `api` (an Api member or its value)."""
    return WIRE_APIS[Api(api)]


class RunApis(NamedTuple):
    requests: WireApi  # what every measured and warmup request speaks
    server: WireApi  # what the model facts (preflight) and the model's placement are read through


def run_apis(server_kind: ServerKind, workload_api: Api) -> RunApis:
    """The one rule for which API a run speaks."""
    if server_kind == ServerKind.openai:
        # An OpenAI-compatible server speaks only that API, whatever workload.api says.
        openai = wire_api(Api.openai)
        return RunApis(openai, openai)
    # Ollama-API servers answer /v1/chat/completions too, but what they say about the model
    # comes from their native API, whichever API the requests speak.
    return RunApis(wire_api(workload_api), wire_api(Api.chat))


def unsent_warning(api: WireApi, unsent: list[str], options: Options, keep_alive: KeepAlive) -> str:
    """What a run must say when `api` could not carry some of its settings (`unsent`), naming
    the APIs that could have."""
    text = f"the {api.family} API has no field for {', '.join(unsent)}: not sent, the server used its own settings"
    carriers = [w for w in WIRE_APIS.values() if not w.unsendable(options, keep_alive)]
    if not carriers:
        return text
    families = " or ".join(dict.fromkeys(w.family for w in carriers))
    article = "an" if families[0].lower() in "aeiou" else "a"
    names = " or ".join(w.name for w in carriers)
    return f"{text} (use {article} {families} API, workload.api={names}, to send them)"
