"""The bundled server against bad input: size limit, malformed JSON, wrong types, a fuzz of
bodies, and the warning when it listens beyond loopback (it has no authentication)."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import start_server

MODEL = "smollm2:135m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 2}}
ROUTES = ["/api/chat", "/api/generate", "/api/show", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def server():
    started = start_server(
        ServerKind.simulated, ["--load-ms", "0", "--ttft-ms", "0", "--itl-ms", "0", "--max-body-kb", "64"]
    )
    yield started
    started.stop()


def error_message(response: httpx.Response) -> str:
    """The message in Ollama's shape ({"error": "..."}) or OpenAI's ({"error": {"message": ...}})."""
    error = response.json()["error"]
    return error if isinstance(error, str) else error["message"]


def assert_error_shape(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert error_message(response)


def still_serves(client: httpx.Client) -> None:
    response = client.post("/api/chat", json=CHAT)
    assert response.status_code == 200 and json.loads(response.text.splitlines()[-1])["done"] is True


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_the_limit_is_refused_with_413(server, route):
    with httpx.Client(base_url=server.url) as client:
        big = {"model": MODEL, "prompt": "x" * 70_000}
        assert_error_shape(client.post(route, json=big), 413)
        # Without a Content-Length (chunked), the limit holds while reading.
        chunks = iter([json.dumps(big).encode()[i : i + 4096] for i in range(0, 70_100, 4096)])
        assert_error_shape(client.post(route, content=chunks), 413)
        still_serves(client)


@pytest.mark.parametrize(
    ("route", "body", "fragment"),
    [
        ("/api/chat", b"{not json", "invalid JSON"),
        ("/api/chat", b"[1, 2]", "must be a JSON object"),
        ("/api/chat", b"\xff\xfe\x00", "invalid JSON"),
        ("/api/chat", json.dumps({"model": 5}).encode(), "model"),
        ("/api/chat", json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
        ("/api/chat", json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode(), "content"),
        ("/api/chat", json.dumps({"model": MODEL, "messages": [{"role": 3, "content": "x"}]}).encode(), "role"),
        ("/api/chat", json.dumps({**CHAT, "stream": "yes"}).encode(), "stream"),
        ("/api/chat", json.dumps({**CHAT, "keep_alive": [1]}).encode(), "keep_alive"),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": 7}).encode(), "prompt"),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "system": 1}).encode(), "system"),
        ("/v1/chat/completions", b"{", "invalid JSON"),
        ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": 3}).encode(), "messages"),
        ("/v1/chat/completions", json.dumps({**CHAT, "max_tokens": "x"}).encode(), "must be of type integer"),
    ],
)
def test_malformed_json_and_wrong_types_get_400_in_ollamas_error_shape(server, route, body, fragment):
    with httpx.Client(base_url=server.url) as client:
        response = client.post(route, content=body, headers={"content-type": "application/json"})
        assert_error_shape(response, 400)
        assert fragment in error_message(response)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["model", "messages", "prompt", "system", "options", "stream", "keep_alive", "raw", "max_tokens", "format"]
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(lambda d: json.dumps({"model": MODEL, **d}).encode()),
)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10.0) as shared:
        yield shared


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_the_server_survives_a_fuzz_of_bad_requests(client, route, body):
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    # A clean answer, never an unhandled exception: a 2xx, or an error in the API's shape.
    # A 500 only where Ollama gives one too: an option of the wrong type.
    if response.status_code >= 400:
        assert response.status_code in (400, 404, 500), response.text
        assert error_message(response)
        assert response.status_code != 500 or error_message(response).startswith("option "), response.text


def test_the_server_still_serves_after_the_fuzz(client):
    still_serves(client)


def test_listening_beyond_loopback_warns(tmp_path):
    started = start_server(ServerKind.simulated, ["--host", "0.0.0.0"], log_path=tmp_path / "server.log")
    try:
        with httpx.Client(base_url=started.url.replace("0.0.0.0", "127.0.0.1")) as client:
            still_serves(client)
    finally:
        started.stop()
    log = (tmp_path / "server.log").read_text()
    assert "warning: listening on 0.0.0.0" in log and "no authentication" in log


def test_on_loopback_no_warning(tmp_path):
    started = start_server(ServerKind.simulated, [], log_path=tmp_path / "server.log")
    started.stop()
    assert "warning" not in (tmp_path / "server.log").read_text()
