"""The embedded llama.cpp server end to end: a real `python -m sentinel_exp.serve --engine embedded`
subprocess with the bundled SmolLM2-135M, driven over loopback HTTP as a client drives Ollama.

Answers are kept short (num_predict 4-16) so the module takes seconds on 2 CPU cores. The server
runs llama.cpp on one thread: with every core in use, one busy neighbour (another job on a shared
CI box) stalls llama.cpp's spinning threads and a 6 s module took 8 minutes. Timing assertions
compare cold against warm loads by a wide margin for the same reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.require import require, require_module

require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")
import httpx  # noqa: E402

from sentinel_exp.names import ServerKind  # noqa: E402
from sentinel_exp.serve.engines import registry  # noqa: E402
from sentinel_exp.serve.engines.gguf_meta import file_sha256  # noqa: E402
from sentinel_exp.serve.launch import BundledServer, ServerStartError, running_server, start_server  # noqa: E402
from sentinel_exp.serve.prompt_fit import DEFAULT_NUM_KEEP, prompt_limit  # noqa: E402
from sentinel_exp.serve.threads import THREADS_ENV  # noqa: E402

pytestmark = pytest.mark.embedded

REPO = Path(__file__).resolve().parents[2]
MODEL = registry.BUNDLED_TAG
# Deterministic answers; the prompt asks for a long text so num_predict is what ends it.
STORY = "Write a long story about a dragon who guards a library."
DETERMINISTIC = {"temperature": 0, "seed": 42}
DURATIONS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)

require(registry.bundled_model_path(), f"the bundled {MODEL} GGUF is not installed ({registry.EXTRA_HINT})")


@pytest.fixture(scope="module")
def server() -> Iterator[BundledServer]:
    try:
        started = start_server(ServerKind.embedded, timeout_s=120.0, env={THREADS_ENV: "1"}, cwd=REPO)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def client(server: BundledServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def stream_ndjson(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def chat(client: httpx.Client, content: str = STORY, num_predict: int = 8, **extra: Any) -> tuple[str, dict]:
    """One streamed /api/chat; returns (answer text, final chunk)."""
    options = {**DETERMINISTIC, "num_predict": num_predict, **extra.pop("options", {})}
    chunks = stream_ndjson(
        client,
        "/api/chat",
        {"model": MODEL, "messages": [{"role": "user", "content": content}], "options": options, **extra},
    )
    assert all("error" not in c for c in chunks), chunks
    final = chunks[-1]
    assert final["done"] is True and all(c["done"] is False for c in chunks[:-1])
    return "".join(c["message"]["content"] for c in chunks[:-1]), final


def unload(client: httpx.Client) -> None:
    reply = client.post("/api/generate", json={"model": MODEL, "prompt": "", "keep_alive": 0})
    assert reply.status_code == 200 and reply.json()["done_reason"] == "unload"
    assert client.get("/api/ps").json()["models"] == []


def assert_cold_and_warm(cold: dict, warm: dict) -> None:
    assert cold["load_duration"] > 20_000_000, cold  # a real llama.cpp load, > 20 ms
    assert cold["load_duration"] > 5 * warm["load_duration"], (cold, warm)


@pytest.mark.timing
def test_first_request_is_cold_then_warm(client: httpx.Client) -> None:
    if client.get("/api/ps").json()["models"]:  # another test ran first (-k, reordering)
        unload(client)
    text, cold = chat(client)
    _, warm = chat(client)
    assert text.strip()
    for final in (cold, warm):
        assert final["done_reason"] in ("stop", "length")
        assert final["message"] == {"role": "assistant", "content": ""}
        for key in DURATIONS:
            assert isinstance(final[key], int) and final[key] >= 0, (key, final)
        assert 1 <= final["eval_count"] <= 8
        assert final["prompt_eval_count"] > 10  # the templated prompt, system turn included
        assert final["prompt_eval_duration"] > 0 and final["eval_duration"] > 0
        parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
        assert final["total_duration"] + 2_000_000 >= parts, final  # 2 ms: clocks start µs apart
        assert final["total_duration"] < 60e9
    assert_cold_and_warm(cold, warm)
    assert warm["load_duration"] < 50_000_000, warm
    # Same prompt again: llama.cpp reuses the cached prefix, as Ollama does.
    assert warm["prompt_eval_count"] == cold["prompt_eval_count"]


@pytest.mark.timing
def test_keep_alive_zero_unloads_and_next_request_is_cold(client: httpx.Client) -> None:
    chat(client, keep_alive=0)
    assert client.get("/api/ps").json()["models"] == []
    _, cold = chat(client)
    assert client.get("/api/ps").json()["models"][0]["name"] == MODEL
    _, warm = chat(client)
    assert_cold_and_warm(cold, warm)


@pytest.mark.timing
def test_changing_num_ctx_reloads(client: httpx.Client) -> None:
    chat(client)  # resident with the default num_ctx (2048)
    _, warm = chat(client)
    _, reloaded = chat(client, options={"num_ctx": 1024})
    assert_cold_and_warm(reloaded, warm)
    ps = client.get("/api/ps").json()["models"][0]
    assert ps["context_length"] == 1024
    _, same = chat(client, options={"num_ctx": 1024})
    assert_cold_and_warm(reloaded, same)
    _, back = chat(client)
    assert_cold_and_warm(back, same)


def test_num_predict_limits_eval_count(client: httpx.Client) -> None:
    text, final = chat(client, num_predict=8)
    assert final["eval_count"] == 8 and final["done_reason"] == "length", final
    assert text.strip()


def test_stop_string_ends_generation(client: httpx.Client) -> None:
    text, final = chat(client, "Describe the sky in three sentences.", num_predict=64, options={"stop": ["."]})
    assert final["done_reason"] == "stop", (text, final)
    assert "." not in text and final["eval_count"] < 64


def test_unknown_model_is_404(client: httpx.Client) -> None:
    for path, body in (
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/api/generate", {"prompt": "hi"}),
    ):
        reply = client.post(path, json={"model": "nope:1b", **body})
        assert reply.status_code == 404
        assert reply.json() == {"error": "model 'nope:1b' not found"}


def test_empty_prompt_loads_and_unloads(client: httpx.Client) -> None:
    unload(client)
    reply = client.post("/api/generate", json={"model": MODEL, "prompt": ""})
    assert reply.status_code == 200
    body = reply.json()
    assert body["done"] is True and body["done_reason"] == "load" and body["response"] == ""
    assert "total_duration" not in body
    assert [m["name"] for m in client.get("/api/ps").json()["models"]] == [MODEL]
    reply = client.post("/api/generate", json={"model": MODEL, "prompt": "", "keep_alive": 0})
    assert reply.json()["done_reason"] == "unload"
    assert client.get("/api/ps").json()["models"] == []


def test_tags_and_show_describe_the_gguf(client: httpx.Client) -> None:
    path = registry.bundled_model_path()
    assert path is not None
    tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    entry = tags[MODEL]
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    assert entry["digest"] == file_sha256(path)
    assert entry["size"] == path.stat().st_size
    assert entry["details"]["family"] == "llama" and entry["details"]["format"] == "gguf"
    assert entry["details"]["quantization_level"] == "Q4_1"
    assert entry["details"]["parameter_size"] == "134.52M"
    dt.datetime.fromisoformat(entry["modified_at"].replace("Z", "+00:00"))

    show = client.post("/api/show", json={"model": MODEL}).json()
    assert show["details"]["family"] == "llama" and show["details"]["quantization_level"] == "Q4_1"
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["llama.context_length"] == 8192
    assert show["model_info"]["general.parameter_count"] == 134_515_008
    assert "<|im_start|>" in show["template"]
    assert client.post("/api/show", json={"model": "nope:1b"}).status_code == 404


def test_ps_shows_size_and_expiry(client: httpx.Client) -> None:
    chat(client, keep_alive="10m")
    (model,) = client.get("/api/ps").json()["models"]
    path = registry.bundled_model_path()
    assert path is not None
    assert model["name"] == MODEL and model["size"] > path.stat().st_size  # weights + KV cache
    assert 0 <= model["size_vram"] <= model["size"]
    expires = dt.datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
    left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert 500 < left <= 601, model


def test_stream_false_returns_one_object_with_the_whole_text(client: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": STORY, "options": {**DETERMINISTIC, "num_predict": 12}}
    streamed = stream_ndjson(client, "/api/generate", body)
    reply = client.post("/api/generate", json={**body, "stream": False})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    whole = reply.json()
    assert whole["done"] is True and whole["eval_count"] == streamed[-1]["eval_count"]
    assert whole["response"] == "".join(c["response"] for c in streamed[:-1]) != ""
    chat_reply = client.post(
        "/api/chat",
        json={
            "model": MODEL,
            "stream": False,
            "options": body["options"],
            "messages": [{"role": "user", "content": STORY}],
        },
    ).json()
    assert chat_reply["message"]["content"] == whole["response"]


def test_raw_generate_skips_the_template(client: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "prompt": "The capital of France is",
        "raw": True,
        "stream": False,
        "options": {**DETERMINISTIC, "num_predict": 4},
    }
    raw = client.post("/api/generate", json=body).json()
    templated = client.post("/api/generate", json={**body, "raw": False}).json()
    assert raw["eval_count"] >= 1 and raw["response"]
    assert raw["prompt_eval_count"] < 10 < templated["prompt_eval_count"]


def test_openai_stream_with_usage(client: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": STORY}],
        "stream": True,
        "max_tokens": 10,
        "temperature": 0,
        "seed": 42,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [
        c["choices"][0]["delta"]["content"]
        for c in chunks[1:]
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert content and "".join(content).strip()
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["length"]
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    assert usage["usage"]["prompt_tokens"] > 10
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 10


def test_over_long_prompt_is_truncated_as_ollama_does(client: httpx.Client, server: BundledServer) -> None:
    # About 600 tokens against a 256-token window; Ollama keeps num_keep (4) + BOS tokens and the
    # tail (where the instruction is), leaving half of the rest free: 256 - (256 - 5) // 2 = 131.
    prompt = "The sky is blue today. " * 100 + STORY
    reply = client.post(
        "/api/generate",
        json={
            "model": MODEL,
            "prompt": prompt,
            "stream": False,
            "options": {**DETERMINISTIC, "num_ctx": 256, "num_predict": 4},
        },
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["prompt_eval_count"] == prompt_limit(256, DEFAULT_NUM_KEEP + 1) == 131
    assert body["eval_count"] == 4 and body["done_reason"] == "length", body
    assert server.process.poll() is None
    _, final = chat(client)  # default num_ctx again: reloads and answers
    assert final["eval_count"] >= 1


@pytest.mark.timing
def test_client_disconnect_stops_generation(client: httpx.Client, server: BundledServer) -> None:
    chat(client)  # warm, so the long request below starts decoding at once
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": STORY}],
        "options": {**DETERMINISTIC, "num_predict": 1500},
    }
    with (
        httpx.Client(base_url=server.url, timeout=60) as other,
        other.stream("POST", "/api/chat", json=body) as response,
    ):
        lines = response.iter_lines()
        for _ in range(3):
            assert json.loads(next(lines))["done"] is False
    # 1500 tokens would take 20+ s more; a stopped generation frees the model at once (a 4-token
    # answer takes well under a second, a few on a busy machine).
    started = time.perf_counter()
    _, final = chat(client, num_predict=4)
    assert time.perf_counter() - started < 10.0, final
    assert final["eval_count"] == 4
    assert server.process.poll() is None


def test_the_engine_is_named_embedded(client: httpx.Client, server: BundledServer) -> None:
    assert client.get("/api/version").json()["version"].endswith("-sentinel-embedded")
    assert "deprecated" not in server.log_tail()


def test_llamacpp_still_starts_the_embedded_engine_with_a_warning() -> None:
    with running_server("llamacpp", timeout_s=120.0, env={THREADS_ENV: "1"}) as old_name:
        version = httpx.get(f"{old_name.url}/api/version", trust_env=False).json()["version"]
        assert version.endswith("-sentinel-embedded")
        assert "warning: --engine llamacpp is deprecated; use --engine embedded" in old_name.log_tail()
