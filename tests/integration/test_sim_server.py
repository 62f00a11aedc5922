"""The simulated server over real loopback HTTP: Ollama's wire shapes and semantics.

Tests marked `timing` read the durations the server reports. A duration cannot come in under what
the server injects (its sleeps), so those floors stay. A busy machine wakes the server late (CI once
woke a first token 9 ms late), so each ceiling sits about halfway to what the bug it guards against
would read (a 200 ms load counted in the wrong duration, a load where there should be none), not a
few ms above the injected figure.
"""

import asyncio
import json
import time

import httpx
import pytest

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import ServerStartError, start_server

CHAT = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi there"}], "options": {"num_predict": 4}}


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


@pytest.fixture
def sim(sim_server_factory):
    return sim_server_factory("--load-ms", "200", "--ttft-ms", "20", "--itl-ms", "2", "--parallel", "1")


@pytest.mark.timing
def test_streamed_chat_has_ollama_shape_and_durations(sim):
    with httpx.Client(base_url=sim.url) as client:
        chunks = ndjson(client.post("/api/chat", json=CHAT))
    *middle, final = chunks
    assert len(middle) == 4
    assert all(c["done"] is False and c["message"]["role"] == "assistant" and c["message"]["content"] for c in middle)
    assert set(middle[0]) == {"model", "created_at", "message", "done"}
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["eval_count"] == 4 and final["prompt_eval_count"] > 0
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
    # Cold: the first request loaded the model (200 ms), then 20 ms to the first token, 3 gaps of 2 ms.
    assert 195e6 <= final["load_duration"] <= 380e6  # one load, not two
    assert 19e6 <= final["prompt_eval_duration"] <= 100e6  # the 200 ms load is not in it
    # The tokens keep their schedule (20 ms, then every 2 ms) when one wakes late: a late first
    # token shortens eval_duration by as much as it lengthened prefill, so the floor is their sum.
    assert final["prompt_eval_duration"] + final["eval_duration"] >= 25.5e6
    assert final["eval_duration"] <= 100e6  # nor in the decode
    assert final["total_duration"] >= final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]


def test_generate_streams_response_field_and_stop_reason(sim):
    with httpx.Client(base_url=sim.url) as client:
        chunks = ndjson(client.post("/api/generate", json={"model": "smollm2:135m", "prompt": "x"}))
    assert all("response" in c for c in chunks)
    assert chunks[-1]["done_reason"] == "stop" and chunks[-1]["eval_count"] == len(chunks) - 1 == 32


@pytest.mark.timing
def test_keep_alive_zero_unloads_and_next_request_is_cold(sim):
    with httpx.Client(base_url=sim.url) as client:
        first = ndjson(client.post("/api/chat", json=CHAT))[-1]
        warm = ndjson(client.post("/api/chat", json={**CHAT, "keep_alive": 0}))[-1]
        assert client.get("/api/ps").json()["models"] == []
        cold = ndjson(client.post("/api/chat", json=CHAT))[-1]
    assert first["load_duration"] > 190e6 and cold["load_duration"] > 190e6
    assert warm["load_duration"] < 150e6  # no load: under the 190 ms floor of one


@pytest.mark.timing
def test_keep_alive_expiry_makes_the_next_request_cold(sim):
    with httpx.Client(base_url=sim.url) as client:
        ndjson(client.post("/api/chat", json={**CHAT, "keep_alive": "500ms"}))
        assert len(client.get("/api/ps").json()["models"]) == 1
        time.sleep(0.8)
        assert client.get("/api/ps").json()["models"] == []
        after = ndjson(client.post("/api/chat", json=CHAT))[-1]
    assert after["load_duration"] > 190e6


@pytest.mark.timing
def test_changing_a_runner_option_reloads(sim):
    with httpx.Client(base_url=sim.url) as client:
        ndjson(client.post("/api/chat", json=CHAT))
        same = ndjson(client.post("/api/chat", json={**CHAT, "options": {"num_predict": 4, "temperature": 0.1}}))[-1]
        other = ndjson(client.post("/api/chat", json={**CHAT, "options": {"num_predict": 4, "num_ctx": 512}}))[-1]
        ps = client.get("/api/ps").json()["models"][0]
    assert same["load_duration"] < 150e6  # sampling options do not reload (a reload takes 200 ms)
    assert other["load_duration"] > 190e6
    assert ps["context_length"] == 512 and ps["size_vram"] == 0 and ps["expires_at"].endswith("Z")


def test_errors_are_ollamas(sim):
    with httpx.Client(base_url=sim.url) as client:
        missing = client.post("/api/chat", json={**CHAT, "model": "nope:1b"})
        bad_json = client.post("/api/chat", content=b"{not json")
        bad_keep = client.post("/api/chat", json={**CHAT, "keep_alive": "300"})
        bad_type = client.post("/api/chat", json={**CHAT, "options": {"num_ctx": "abc"}})
        no_model = client.post("/api/generate", json={"prompt": "x"})
    assert missing.status_code == 404 and missing.json() == {"error": "model 'nope:1b' not found"}
    assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]
    assert bad_keep.status_code == 400
    assert bad_type.status_code == 500 and "num_ctx" in bad_type.json()["error"]
    assert no_model.status_code == 400


def test_empty_prompt_loads_and_keep_alive_zero_unloads(sim):
    with httpx.Client(base_url=sim.url) as client:
        loaded = client.post("/api/generate", json={"model": "smollm2:135m", "prompt": ""}).json()
        assert [m["name"] for m in client.get("/api/ps").json()["models"]] == ["smollm2:135m"]
        unloaded = client.post("/api/generate", json={"model": "smollm2:135m", "keep_alive": 0}).json()
        assert client.get("/api/ps").json()["models"] == []
    assert loaded["done"] is True and loaded["done_reason"] == "load" and "load_duration" not in loaded
    assert unloaded["done_reason"] == "unload"


def test_metadata_endpoints(sim):
    with httpx.Client(base_url=sim.url) as client:
        tags = client.get("/api/tags").json()["models"]
        show = client.post("/api/show", json={"model": "smollm2:135m"}).json()
        version = client.get("/api/version").json()
        root = client.get("/")
    entry = next(m for m in tags if m["name"] == "smollm2:135m")
    assert len(entry["digest"]) == 64 and entry["size"] > 0
    assert set(entry["details"]) >= {"format", "family", "parameter_size", "quantization_level"}
    assert show["details"] == entry["details"]
    assert version["version"].endswith("sentinel-simulated")
    assert root.text == "Ollama is running"


def test_stream_false_returns_one_object(sim):
    with httpx.Client(base_url=sim.url) as client:
        body = client.post(
            "/api/generate",
            json={"model": "smollm2:135m", "prompt": "x", "stream": False, "options": {"num_predict": 3}},
        ).json()
    assert body["done"] is True and body["response"] == "The sky looks" and body["eval_count"] == 3


def test_openai_stream_shape(sim):
    payload = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "max_tokens": 3,
        "stream_options": {"include_usage": True},
    }
    with httpx.Client(base_url=sim.url) as client:
        text = client.post("/v1/chat/completions", json=payload).text
    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["The", " sky", " looks"]
    assert chunks[4]["choices"][0]["finish_reason"] == "length"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 3


@pytest.mark.timing
def test_one_slot_queues_the_second_request_outside_load_and_prefill(sim):
    long = {**CHAT, "options": {"num_predict": 100}}  # 20 ms + 99 x 2 ms of generation

    async def two_at_once():
        async with httpx.AsyncClient(base_url=sim.url) as client:
            await client.post("/api/chat", json=CHAT)  # load first
            responses = await asyncio.gather(*(client.post("/api/chat", json=long) for _ in range(2)))
        return sorted((ndjson(r)[-1] for r in responses), key=lambda f: f["total_duration"])

    first, second = asyncio.run(two_at_once())
    # As in Ollama, the model was ready for both (no load), and the prefill clock starts with the
    # slot: the second one's wait for the first (~218 ms) shows in total_duration alone.
    assert first["load_duration"] < 150e6 and second["load_duration"] < 150e6
    # 20 ms, not the ~218 ms wait for the slot.
    assert 18e6 <= second["prompt_eval_duration"] <= 100e6
    waited = (
        second["total_duration"] - second["load_duration"] - second["prompt_eval_duration"] - second["eval_duration"]
    )
    assert waited > 100e6  # ~218 ms, less however late the second request arrived


@pytest.mark.parametrize("fault", ["http_500", "http_503"])
def test_scripted_http_errors(sim_server_factory, fault):
    server = sim_server_factory("--load-ms", "0", "--fault", f"1:{fault}")
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/api/chat", json=CHAT)
        after = client.post("/api/chat", json=CHAT)
    assert response.status_code == int(fault[-3:]) and "error" in response.json()
    assert after.status_code == 200


def test_scripted_midstream_error_line_and_cut(sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--fault", "1:error_midstream", "--fault", "2:cut_stream")
    with httpx.Client(base_url=server.url) as client:
        chunks = ndjson(client.post("/api/chat", json=CHAT))
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/api/chat", json=CHAT)
    assert chunks[-1] == {"error": "simulated failure mid-stream"}
    assert not any(c.get("done") for c in chunks)


@pytest.mark.timing
def test_requests_arriving_during_a_cold_load_start_their_clock_when_it_ends(sim_server_factory):
    server = sim_server_factory("--load-ms", "300", "--ttft-ms", "40", "--itl-ms", "5", "--parallel", "0")
    body = {**CHAT, "options": {"num_predict": 8}}

    async def four_at_once():
        async with httpx.AsyncClient(base_url=server.url) as client:
            responses = await asyncio.gather(*(client.post("/api/chat", json=body) for _ in range(4)))
        return [ndjson(r)[-1] for r in responses]

    for final in asyncio.run(four_at_once()):
        # Each waited for the one load (300 ms, less however much later than the first it arrived;
        # a request that did not wait would read ~0).
        assert final["load_duration"] >= 200e6
        # Then 40 ms to its first token: not 0, and not counted from its arrival (~340 ms).
        assert 38e6 <= final["prompt_eval_duration"] <= 100e6
        # Tokens keep absolute deadlines (40 ms, then every 5 ms), so the last one never comes before
        # 75 ms after the load, however late the first woke under a busy CPU; a burst would be ~0 ms.
        assert final["prompt_eval_duration"] + final["eval_duration"] >= (40 + 7 * 5 - 1) * 1e6


@pytest.mark.timing
def test_a_waiting_reload_holds_back_later_requests_for_the_resident_model(sim_server_factory):
    # Ollama schedules in arrival order: once a request needs a reload, later requests for the
    # model still resident queue behind it instead of keeping the old model busy for ever.
    server = sim_server_factory("--load-ms", "100", "--ttft-ms", "20", "--itl-ms", "5", "--parallel", "0")
    long = {**CHAT, "options": {"num_predict": 80}}  # 20 ms + 79 x 5 ms
    other = {**CHAT, "options": {"num_predict": 4, "num_ctx": 1024}}  # another runner option: a reload

    async def post(client, body, delay_s):
        await asyncio.sleep(delay_s)
        response = await client.post("/api/chat", json=body)
        return ndjson(response)[-1], time.perf_counter()

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await client.post("/api/chat", json=CHAT)  # resident with the default options
            return await asyncio.gather(post(client, long, 0), post(client, other, 0.1), post(client, long, 0.2))

    (_, first_done), (reload, reload_done), (later, later_done) = asyncio.run(scenario())
    assert reload_done < later_done  # the later request did not overtake the reload
    # The reload waited for the first request (~315 ms more) and then loaded (100 ms): ~415 ms, of
    # which the floor keeps 150 ms of waiting (a reload that did not wait would read 100 ms).
    assert 250e6 <= reload["load_duration"] <= 650e6
    # The later request waited behind it (~350 ms) and then reloaded the default options: a cold start.
    assert later["load_duration"] >= 250e6
    assert first_done < reload_done


def test_default_keep_alive_applies_to_requests_that_send_none(sim_server_factory):
    server = sim_server_factory("--load-ms", "100", "--ttft-ms", "5", "--keep-alive", "0.2s")
    with httpx.Client(base_url=server.url) as client:
        first = ndjson(client.post("/api/chat", json=CHAT))[-1]
        warm = ndjson(client.post("/api/chat", json=CHAT))[-1]
        time.sleep(0.4)  # past the 0.2 s default: unloaded
        after = ndjson(client.post("/api/chat", json=CHAT))[-1]
        kept = ndjson(client.post("/api/chat", json={**CHAT, "keep_alive": -1}))[-1]
        time.sleep(0.4)  # a request's own keep_alive wins over the default
        still = ndjson(client.post("/api/chat", json=CHAT))[-1]
    # A load takes 100 ms; no load reads well under that, also with other tests on every core.
    assert first["load_duration"] >= 90e6 and warm["load_duration"] < 80e6
    assert after["load_duration"] >= 90e6
    assert kept["load_duration"] < 80e6 and still["load_duration"] < 80e6


def test_ollama_keep_alive_env_sets_the_default(sim_server_factory, monkeypatch):
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "0")
    server = sim_server_factory("--load-ms", "50")
    with httpx.Client(base_url=server.url) as client:
        client.post("/api/chat", json=CHAT)
        models = client.get("/api/ps").json()["models"]
    assert models == []  # unloaded as soon as the request ended


def test_a_negative_keep_alive_flag_means_forever(sim_server_factory):
    server = sim_server_factory("--load-ms", "50", "--keep-alive", "-1m")
    with httpx.Client(base_url=server.url) as client:
        client.post("/api/chat", json=CHAT)
        [model] = client.get("/api/ps").json()["models"]
    assert model["expires_at"].startswith("2318-")  # Ollama's "forever"


def test_a_bad_ollama_keep_alive_env_is_refused():
    with pytest.raises(ServerStartError) as refused:
        start_server(ServerKind.simulated, env={"OLLAMA_KEEP_ALIVE": "soon"}, timeout_s=60)
    assert refused.value.exit_code == 2
    assert "invalid default keep_alive 'soon'" in refused.value.log_tail
