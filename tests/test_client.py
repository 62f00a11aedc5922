"""The streaming clients against the simulated server over loopback: timing and faults."""

import asyncio
import statistics

import httpx
import pytest

from sentinel_exp.clients import ollama, openai
from sentinel_exp.clients.common import send_request
from sentinel_exp.records import MEASURED, RequestRecord

pytestmark = pytest.mark.slow


async def run_requests(url, api, count, concurrency=1, options=None, timeout_s=30.0, model="smollm2:135m"):
    options = {"num_predict": 16} if options is None else options
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=timeout_s),
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i):
            if api == "openai":
                spec = openai.build_spec(model, "why is the sky blue", 0, None, options)
                consume = openai.consume_sse
            else:
                spec = ollama.build_spec(api, model, "why is the sky blue", 0, None, options, None)
                consume = ollama.consume_ndjson
            record = RequestRecord(index=i, phase=MEASURED, prompt_index=0, api=api)
            return await send_request(client, spec, record, consume)

        records = []
        for start in range(0, count, concurrency):
            records += await asyncio.gather(*(one(i) for i in range(start, min(count, start + concurrency))))
        return records


@pytest.mark.parametrize("api", ["chat", "generate", "openai"])
def test_timings_match_the_injected_latency(sim_server_factory, api):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5")
    records = asyncio.run(run_requests(server.url, api, 12))[2:]
    assert all(r.ok for r in records)
    ttft = statistics.median(r.ttft_ms for r in records)
    itl = statistics.median(b - a for r in records for a, b in zip(r.chunk_times_ms, r.chunk_times_ms[1:]))
    assert 40.0 <= ttft <= 42.0
    assert 4.0 <= itl <= 6.0
    for r in records:
        assert r.eval_count == 16 and len(r.chunk_times_ms) == 16  # the role-only OpenAI delta is no token
        assert r.ttfb_ms <= r.ttft_ms <= r.e2e_ms
        assert r.e2e_ms >= 40 + 15 * 5
        assert r.done_reason == "length"
    assert statistics.median(r.e2e_ms for r in records) <= 40 + 15 * 5 + 4
    assert statistics.median(r.queue_ms for r in records) < 3  # warm keep-alive connections
    if api != "openai":
        assert all(r.total_duration_ms <= r.e2e_ms for r in records)
        assert statistics.median(r.load_duration_ms for r in records) < 2


def test_timings_stay_accurate_under_concurrency(sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5")
    records = asyncio.run(run_requests(server.url, "chat", 48, concurrency=16))[16:]
    assert all(r.ok for r in records)
    assert 40.0 <= statistics.median(r.ttft_ms for r in records) <= 44.0


@pytest.mark.parametrize("fault, error_class", [
    ("http_500", "HTTP500"),
    ("http_503", "HTTP503"),
    ("error_midstream", "ServerError"),
    ("cut_stream", "RemoteProtocolError"),
    ("early_end", "StreamCut"),
    ("malformed", "MalformedChunk"),
    ("stall", "ReadTimeout"),
])
def test_each_fault_becomes_a_failed_record(sim_server_factory, fault, error_class):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "1", "--fault", f"2:{fault}")
    records = asyncio.run(run_requests(server.url, "chat", 3, timeout_s=0.5))
    assert [r.ok for r in records] == [True, False, True]
    failed = records[1]
    assert failed.error_class == error_class and failed.error
    assert failed.e2e_ms is None
    if fault not in ("http_500", "http_503"):
        assert len(failed.chunk_times_ms) == 2  # the tokens that did arrive are kept


def test_cancellation_leaves_a_cancelled_record(sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "50")

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url) as client:
            record = RequestRecord(index=0, phase=MEASURED, prompt_index=0, api="chat")
            spec = ollama.build_spec("chat", "smollm2:135m", "x", 0, None, {"num_predict": 50}, None)
            task = asyncio.create_task(send_request(client, spec, record, ollama.consume_ndjson))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return record

    record = asyncio.run(scenario())
    assert record.error_class == "Cancelled" and not record.ok and record.cancelled
    assert 3 <= len(record.chunk_times_ms) <= 8
