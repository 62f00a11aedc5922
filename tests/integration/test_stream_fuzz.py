"""The stream parsers under fuzz: NDJSON (Ollama) and SSE (OpenAI) bodies split at arbitrary byte
boundaries, with junk, very long lines and invalid UTF-8. No crash and no hang: every request
comes back as a record, a failed one with an error class; a valid stream gives the same tokens
wherever its bytes are split.

Each body is read on both of the runner's paths, which must agree: through httpx's own in-memory
transport (no socket) into `send_request` (servers off this machine), and piece by piece into the
loopback client's Exchange, the code its connections run on each piece of body that arrives.
Pure, but a fuzz takes its time: it sits with the slow tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel_exp.clients import send_request
from sentinel_exp.clients.base import Prompt, WireApi
from sentinel_exp.clients.common import StreamFault, TokenTimes, failure_of
from sentinel_exp.clients.http1 import Exchange
from sentinel_exp.clients.ollama import OllamaChat
from sentinel_exp.clients.openai import OpenAIChat
from sentinel_exp.names import ErrorClass
from sentinel_exp.records import RequestRecord

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Chunks(httpx.AsyncByteStream):
    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def split(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if body[a:b]]


def fetch(wire: WireApi, parts: Sequence[bytes]) -> RequestRecord:
    media = "application/x-ndjson" if wire.family == "Ollama" else "text/event-stream"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": media}, stream=Chunks(parts))

    async def one() -> RequestRecord:
        record = RequestRecord(index=0, phase="measured", prompt_index=0, api=wire.name)
        spec = wire.build_request("m", Prompt("hi"), {}, None)
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://fuzz") as client:
            # A parser that loops on some input would hang the run: a bound says so instead.
            return await asyncio.wait_for(send_request(client, spec, record, wire.reader), timeout=10)

    record = asyncio.run(one())
    assert_same(record, fetch_loopback(wire, parts, media))
    return record


def fetch_loopback(wire: WireApi, parts: Sequence[bytes], media: str) -> RequestRecord:
    """The same body through the loopback client's body path, one piece per arrival."""
    record = RequestRecord(index=0, phase="measured", prompt_index=0, api=wire.name)
    loop = asyncio.new_event_loop()
    try:
        exchange = Exchange(loop, wire.reader(TokenTimes(record, 0)))
        exchange.status, exchange.content_type = 200, media.encode()
        try:
            for arrived, part in enumerate(parts, start=1):
                exchange.feed_body(part, arrived)
            exchange.body_ended(len(parts) + 1)
            if record.e2e_ms is None:
                raise StreamFault(ErrorClass.STREAM_CUT, "stream ended before the final chunk")
            record.ok = True
        except (StreamFault, TypeError, ValueError, AttributeError, KeyError) as exc:
            record.error_class, record.error = failure_of(exc)
    finally:
        loop.close()
    return record


def assert_same(httpx_path: RequestRecord, loopback_path: RequestRecord) -> None:
    """Both paths read the same tokens and reach the same end, or fail with the same class."""
    assert (httpx_path.ok, httpx_path.output_chars) == (loopback_path.ok, loopback_path.output_chars)
    assert httpx_path.error_class == loopback_path.error_class, (httpx_path.error, loopback_path.error)
    assert len(httpx_path.chunk_times_ms) == len(loopback_path.chunk_times_ms)
    assert (httpx_path.eval_count, httpx_path.done_reason) == (loopback_path.eval_count, loopback_path.done_reason)


def ndjson(tokens: Sequence[str]) -> bytes:
    lines = [{"model": "m", "message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    final = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}
    final |= {"eval_count": len(tokens), "prompt_eval_count": 3, "load_duration": 1000, "eval_duration": 5000}
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in [*lines, final])


def sse(tokens: Sequence[str]) -> bytes:
    def event(data: object) -> bytes:
        return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    deltas = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in tokens]
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(tokens)}}
    return b"".join(event(e) for e in [role, *deltas, end, usage]) + b"data: [DONE]\n\n"


TOKENS = st.lists(st.text(min_size=1, max_size=12).filter(lambda t: t.strip(" ") == t or t.strip()), max_size=30)
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


@FUZZ
@given(tokens=TOKENS, cuts=CUTS)
def test_a_valid_ndjson_stream_parses_to_the_same_tokens_wherever_it_is_split(tokens, cuts):
    body = ndjson(tokens)
    record = fetch(OllamaChat(), split(body, cuts))
    assert record.ok and record.error_class is None
    assert record.output_chars == sum(len(t) for t in tokens)
    assert len(record.chunk_times_ms) == len(tokens) and record.eval_count == len(tokens)


@FUZZ
@given(tokens=TOKENS, cuts=CUTS)
def test_a_valid_sse_stream_parses_to_the_same_tokens_wherever_it_is_split(tokens, cuts):
    record = fetch(OpenAIChat(), split(sse(tokens), cuts))
    assert record.ok and record.error_class is None
    assert record.output_chars == sum(len(t) for t in tokens)
    assert len(record.chunk_times_ms) == len(tokens) and record.eval_count == len(tokens)


JUNK = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"\xff\xfe\xfd", b"\xc3\x28", b"{", b"[]", b"null", b"data: {\n", b"data: [1]\n\n", b"\n\n\n", b"\r\n"]
    ),
    st.integers(min_value=1, max_value=2_000_000).map(lambda n: b"x" * n),  # a very long line
)


def garbled(body: bytes, junk: list[bytes], where: list[int]) -> bytes:
    out = body
    for piece, at in zip(junk, where, strict=False):
        at %= len(out) + 1
        out = out[:at] + piece + out[at:]
    return out


WIRES = {"ndjson": (OllamaChat(), ndjson), "sse": (OpenAIChat(), sse)}


@pytest.mark.parametrize("stream", WIRES)
@FUZZ
@given(
    tokens=TOKENS,
    junk=st.lists(JUNK, min_size=1, max_size=4),
    where=st.lists(st.integers(min_value=0), min_size=1, max_size=4),
    cuts=CUTS,
)
def test_junk_in_a_stream_gives_a_record_never_a_crash(stream, tokens, junk, where, cuts):
    wire, encode = WIRES[stream]
    record = fetch(wire, split(garbled(encode(tokens), junk, where), cuts))
    assert record.ok or (record.error_class and record.error)


@FUZZ
@given(body=st.binary(max_size=4096), cuts=CUTS)
def test_any_bytes_at_all_give_a_failed_record_with_a_class(body, cuts):
    for wire in (OllamaChat(), OpenAIChat()):
        record = fetch(wire, split(body, cuts))
        assert record.ok or (record.error_class and record.error)
