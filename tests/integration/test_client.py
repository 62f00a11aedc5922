"""The streaming clients against the simulated server over loopback: timing and faults."""

import asyncio
import statistics

import httpx
import pytest

from sentinel_exp.clients import send_request, wire_api
from sentinel_exp.clients.base import Prompt
from sentinel_exp.clients.http1 import LoopbackClient
from sentinel_exp.names import Api, Phase
from sentinel_exp.records import RequestRecord

pytestmark = pytest.mark.slow


# The runner's two paths: httpx (servers off this machine) and the lean client (loopback).
TRANSPORTS = ["httpx", "loopback"]


def open_client(url, concurrency=1, timeout_s=30.0, transport="loopback"):
    if transport == "loopback":
        return LoopbackClient(url, concurrency, timeout_s)
    limits = httpx.Limits(max_connections=concurrency)
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=timeout_s), limits=limits)


async def run_requests(
    url, api, count, concurrency=1, options=None, timeout_s=30.0, model="smollm2:135m", transport="loopback"
):
    options = {"num_predict": 16} if options is None else options
    async with open_client(url, concurrency, timeout_s, transport) as client:
        wire = wire_api(api)

        async def one(i):
            spec = wire.build_request(model, Prompt("why is the sky blue"), options, None)
            record = RequestRecord(index=i, phase=Phase.MEASURED, prompt_index=0, api=api)
            return await send_request(client, spec, record, wire.reader)

        records = []
        for start in range(0, count, concurrency):
            records += await asyncio.gather(*(one(i) for i in range(start, min(count, start + concurrency))))
        return records


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("api", ["chat", "generate", "openai"])
@pytest.mark.timing
def test_timings_match_the_injected_latency(sim_server_factory, api, transport):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5")
    records = asyncio.run(run_requests(server.url, api, 12, transport=transport))[2:]
    assert all(r.ok for r in records)
    ttft = statistics.median(r.ttft_ms for r in records)
    itl = statistics.median(
        b - a for r in records for a, b in zip(r.chunk_times_ms, r.chunk_times_ms[1:], strict=False)
    )
    # The server's injected 40 ms is a floor; a busy 2-core machine adds wake-up delay on top.
    assert 40.0 <= ttft <= 48.0
    assert 4.0 <= itl <= 8.0
    for r in records:
        assert r.eval_count == 16 and len(r.chunk_times_ms) == 16  # the role-only OpenAI delta is no token
        assert r.ttfb_ms <= r.ttft_ms <= r.e2e_ms
        assert r.e2e_ms >= 40 + 15 * 5
        assert r.done_reason == "length"
    assert statistics.median(r.e2e_ms for r in records) <= 40 + 15 * 5 + 16
    # Warm keep-alive connections: no connect per request. The bound leaves room for a busy machine.
    assert statistics.median(r.queue_ms for r in records) < 8
    if wire_api(api).reports_server_durations:
        assert all(r.total_duration_ms <= r.e2e_ms for r in records)
        assert statistics.median(r.load_duration_ms for r in records) < 2


@pytest.mark.timing
def test_timings_stay_accurate_under_concurrency(sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5")
    records = asyncio.run(run_requests(server.url, "chat", 48, concurrency=16))[16:]
    assert all(r.ok for r in records)
    assert 40.0 <= statistics.median(r.ttft_ms for r in records) <= 80.0  # 16 streams on 2 shared cores


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ("http_500", "HTTP500"),
        ("http_503", "HTTP503"),
        ("error_midstream", "ServerError"),
        ("cut_stream", "RemoteProtocolError"),
        ("early_end", "StreamCut"),
        ("malformed", "MalformedChunk"),
        ("stall", "ReadTimeout"),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_fault_becomes_a_failed_record(sim_server_factory, fault, error_class, transport):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "1", "--fault", f"2:{fault}")
    records = asyncio.run(run_requests(server.url, "chat", 3, timeout_s=0.5, transport=transport))
    assert [r.ok for r in records] == [True, False, True]
    failed = records[1]
    assert failed.error_class == error_class and failed.error
    assert failed.e2e_ms is None
    if fault not in ("http_500", "http_503"):
        assert len(failed.chunk_times_ms) == 2  # the tokens that did arrive are kept


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancellation_leaves_a_cancelled_record_and_the_client_usable(sim_server_factory, transport):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "50")

    async def scenario():
        async with open_client(server.url, transport=transport) as client:
            record = RequestRecord(index=0, phase=Phase.MEASURED, prompt_index=0, api="chat")
            chat = wire_api(Api.chat)
            spec = chat.build_request("smollm2:135m", Prompt("x"), {"num_predict": 50}, None)
            task = asyncio.create_task(send_request(client, spec, record, chat.reader))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The client's one connection was given up half-read: the next request gets a new one.
            after = RequestRecord(index=1, phase=Phase.MEASURED, prompt_index=0, api="chat")
            short = chat.build_request("smollm2:135m", Prompt("x"), {"num_predict": 2}, None)
            await asyncio.wait_for(send_request(client, short, after, chat.reader), timeout=10)
            return record, after

    record, after = asyncio.run(scenario())
    assert record.error_class == "Cancelled" and not record.ok and record.cancelled
    # ~6 tokens in 0.3 s; the 50 of the whole answer had it not stopped (a late wake-up of this
    # busy machine's test process lets a few more in).
    assert 3 <= len(record.chunk_times_ms) <= 20
    assert after.ok and len(after.chunk_times_ms) == 2, after.error


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.timing
def test_poisson_arrivals_that_find_the_client_full_show_their_wait(sim_server_factory, transport):
    from sentinel_exp.run.load import PhasePlan, run_phase

    # Each request takes ~60 ms; arrivals come every ~20 ms on average; one may be in flight.
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5", "--tokens", "5")

    async def scenario():
        records = []
        chat = wire_api(Api.chat)
        async with open_client(server.url, transport=transport) as client:

            async def send_one(index, arrival_ns, keep):
                spec = chat.build_request("smollm2:135m", Prompt("x"), {}, None)
                record = RequestRecord(index=index, phase=Phase.MEASURED, prompt_index=0, api="chat")
                await send_request(client, spec, record, chat.reader, arrival_ns)
                keep(record)

            duration = await run_phase(
                PhasePlan(requests=10, concurrency=1, rate=50.0, seed=1), send_one, records.append, asyncio.Event()
            )
        return records, duration

    records, duration = asyncio.run(scenario())
    assert len(records) == 10 and all(r.ok for r in records)
    assert duration >= 10 * 0.06
    waits = sorted(r.queue_ms for r in records)
    assert waits[-1] > 150  # the backlog builds up: the last arrivals waited for several requests
    # And that wait is not inside TTFT: 40 ms at the server, where the median wait (~190 ms for
    # these seeded arrivals) would put it over 200 ms.
    assert statistics.median(r.ttft_ms for r in records) < 100


class CannedServer:
    """A real HTTP server on loopback that answers every POST with one canned streamed body."""

    def __init__(self, body: bytes, content_type: str, close_after_s: float | None = None) -> None:
        import threading

        self.body, self.content_type = body, content_type
        # None: answer `connection: close` and close; else promise keep-alive, then close when idle.
        self.close_after_s = close_after_s
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                (line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
                b"0",
            )
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: "
            + self.content_type.encode()
            + (b"\r\nconnection: close" if self.close_after_s is None else b"")
            + b"\r\ncontent-length: "
            + str(len(self.body)).encode()
            + b"\r\n\r\n"
        )
        writer.write(self.body)
        await writer.drain()
        if self.close_after_s is not None:
            await asyncio.sleep(self.close_after_s)
        writer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_final_ndjson_line_without_its_newline_still_finishes(transport):
    body = (
        b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
        b'{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
        b'"eval_count":1,"total_duration":5000000}'
    )
    server = CannedServer(body, "application/x-ndjson")
    [record] = asyncio.run(run_requests(server.url, "chat", 1, model="m", transport=transport))
    assert record.ok and record.eval_count == 1 and record.total_duration_ms == 5.0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_that_closes_each_connection_after_its_answer_serves_every_request(transport):
    # CannedServer answers `connection: close` and closes: each request needs a new connection.
    body = b'{"model":"m","message":{"content":"a"},"done":false}\n{"model":"m","message":{"content":""},"done":true}\n'
    server = CannedServer(body, "application/x-ndjson")
    records = asyncio.run(run_requests(server.url, "chat", 4, model="m", transport=transport))
    assert [r.ok for r in records] == [True] * 4, [r.error for r in records]
    assert all(len(r.chunk_times_ms) == 1 for r in records)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_kept_alive_connection_the_server_closed_while_idle_is_not_reused(transport):
    body = b'{"model":"m","message":{"content":"a"},"done":false}\n{"model":"m","message":{"content":""},"done":true}\n'
    server = CannedServer(body, "application/x-ndjson", close_after_s=0.05)

    async def scenario():
        chat, records = wire_api(Api.chat), []
        async with open_client(server.url, transport=transport) as client:
            for i in range(2):
                if i:
                    await asyncio.sleep(0.3)  # the server has closed the idle connection by now
                record = RequestRecord(index=i, phase=Phase.MEASURED, prompt_index=0, api="chat")
                spec = chat.build_request("m", Prompt("x"), {}, None)
                records.append(await send_request(client, spec, record, chat.reader))
        return records

    records = asyncio.run(scenario())
    assert [r.ok for r in records] == [True, True], [r.error for r in records]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_sse_stream_that_ends_after_finish_reason_without_done_still_finishes(transport):
    body = (
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    server = CannedServer(body, "text/event-stream")
    [record] = asyncio.run(run_requests(server.url, "openai", 1, model="m", transport=transport))
    assert record.ok and record.done_reason == "stop" and len(record.chunk_times_ms) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"data: [1, 2]\n\n", "text/event-stream"),
        (b'data: {"choices": ["x"]}\n\n', "text/event-stream"),
        (b'{"model":"m","message":{"content":"a"},"done":true,"total_duration":"slow"}\n', "application/x-ndjson"),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_json_of_the_wrong_shape_is_a_malformed_chunk_not_a_crash(body, content_type, transport):
    server = CannedServer(body, content_type)
    api = "openai" if content_type == "text/event-stream" else "chat"
    [record] = asyncio.run(run_requests(server.url, api, 1, model="m", transport=transport))
    assert not record.ok and record.error_class == "MalformedChunk"
