"""What each wire API reads about the model from a real simulated server over loopback."""

import asyncio

import httpx
import pytest

from sentinel_exp.clients import wire_api
from sentinel_exp.clients.base import Prompt
from sentinel_exp.clients.ollama import OllamaChat
from sentinel_exp.clients.openai import OpenAIChat
from sentinel_exp.errors import ServerError
from sentinel_exp.names import Api, ServerKind
from sentinel_exp.run.servers import ServerHandle


def test_each_api_reads_what_a_real_server_says_about_its_model(sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "1")
    handle = ServerHandle(kind=ServerKind.simulated, url=server.url)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            ollama_facts = await OllamaChat().preflight(client, handle, "smollm2:135m")
            openai_facts = await OpenAIChat().preflight(client, handle, "smollm2:135m")
            with pytest.raises(ServerError) as missing:
                await OpenAIChat().preflight(client, handle, "nosuch")
            chat = wire_api(Api.chat)
            spec = chat.build_request("smollm2:135m", Prompt("hi"), {"num_predict": 2}, None)
            await client.post(spec.path, json={**spec.body, "stream": False})  # loads the model
            placed = await chat.placement(client, "smollm2:135m")
            return ollama_facts, openai_facts, str(missing.value), placed, await OpenAIChat().placement(client, "x")

    ollama_facts, openai_facts, missing, placed, openai_placed = asyncio.run(scenario())
    assert ollama_facts.server_version.endswith("simulated") and ollama_facts.digest
    assert ollama_facts.context_length and ollama_facts.context_length > 0
    assert openai_facts.tags() == {}  # /v1/models names the model and nothing more
    assert missing.startswith(f"model 'nosuch' is not available on the simulated server at {server.url}")
    assert missing.endswith("Pick one it has with model.name=<tag>.")
    assert placed["model_size_mb"] > 0 and 0.0 <= placed["gpu_offload_fraction"] <= 1.0
    assert openai_placed == {}
