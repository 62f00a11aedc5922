"""The loopback client and httpx against servers that misbehave at the level of HTTP: the same
server behaviour gives the same record on either path (a raw asyncio server, one script per case).
Then what is the loopback client's own: its pool's first-come-first-served hand-over, and a switch
of protocols."""

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from sentinel_exp.clients import send_request, wire_api
from sentinel_exp.clients.base import Prompt
from sentinel_exp.clients.http1 import LoopbackClient
from sentinel_exp.records import RequestRecord

TRANSPORTS = ["httpx", "loopback"]

NDJSON_TOKEN = b'{"model":"m","message":{"content":"a"},"done":false}\n'
NDJSON_FINAL = b'{"model":"m","message":{"content":""},"done":true}\n'
SSE_BODY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def read_request(reader: asyncio.StreamReader) -> None:
    """One whole request (head and Content-Length body) off the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)


def one_connection_client(
    server: asyncio.Server, transport: str, read_timeout_s: float
) -> httpx.AsyncClient | LoopbackClient:
    """A client of `server` on either path, with one connection at most."""
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    if transport == "loopback":
        return LoopbackClient(url, 1, read_timeout_s)
    timeout = httpx.Timeout(10.0, read=read_timeout_s)
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=1))


async def fetch(script: Script, api: str, transport: str, timeout_s: float = 0.5) -> RequestRecord:
    """One request to a server that reads the request, then runs `script` on the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = one_connection_client(server, transport, timeout_s)
    wire = wire_api(api)
    async with server, client:
        record = RequestRecord(index=0, phase="measured", prompt_index=0, api=api)
        spec = wire.build_request("m", Prompt("x"), {}, None)
        return await asyncio.wait_for(send_request(client, spec, record, wire.reader), 10)


def final_chunk_then(stall_s: float) -> Script:
    """A token and the final chunk, but not the chunked body's terminator; then a close, or (with
    stall_s > 0) nothing more until the client hangs up or stall_s passes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
            + chunk(NDJSON_TOKEN)
            + chunk(NDJSON_FINAL)
        )
        await writer.drain()
        if stall_s > 0:
            await asyncio.wait_for(reader.read(), stall_s)

    return script


@pytest.mark.parametrize("after_final", ["close", "stall"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stream_whose_final_chunk_arrived_succeeds_however_its_body_ends(transport, after_final):
    # The final chunk is in; then the server closes without the chunked body's last chunk, or says
    # nothing more for longer than the read timeout. The request is complete: httpx stops reading there.
    script = final_chunk_then(5 if after_final == "stall" else 0)
    record = asyncio.run(fetch(script, "chat", transport))
    assert record.ok and record.error_class is None, record.error
    assert len(record.chunk_times_ms) == 1 and record.e2e_ms is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_stalling_after_the_final_chunk_does_not_hold_the_request_for_the_read_timeout(transport):
    started = time.monotonic()
    record = asyncio.run(fetch(final_chunk_then(20), "chat", transport, timeout_s=15.0))
    took = time.monotonic() - started
    assert record.ok and record.e2e_ms is not None and record.e2e_ms < 1000, record.error
    # Both paths wait FINAL_CHUNK_GRACE_S (1 s) for the body's end after the final chunk, outside the record.
    assert took < 3.0, f"{took:.1f} s for a request whose final chunk came at once (read timeout 15 s)"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_sse_answer_with_another_content_type_keeps_its_status(transport):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(SSE_BODY)
            + SSE_BODY
        )
        await writer.drain()

    record = asyncio.run(fetch(script, "openai", transport))
    assert not record.ok and record.error_class == "MalformedChunk"
    assert "text/event-stream" in record.error
    assert record.http_status == 200 and record.ttfb_ms is not None and record.ttfb_ms > 0
    assert record.chunk_times_ms == []


ERROR_BODY = b'{"error":"scripted"}'
ERROR_ANSWER = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(ERROR_BODY)
    + ERROR_BODY
)
STREAMED_ANSWER = (  # as Ollama streams: chunked, the final line, then the body's end
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
    + chunk(NDJSON_TOKEN)
    + chunk(NDJSON_FINAL)
    + b"0\r\n\r\n"
)
NDJSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: %d\r\n\r\n"
    % len(NDJSON_TOKEN + NDJSON_FINAL)
    + NDJSON_TOKEN
    + NDJSON_FINAL
)


async def two_requests_one_after_the_other(
    second_on_reused: str, transport: str
) -> tuple[list[RequestRecord], list[int]]:
    """Two requests through a one-connection client; returns the records and the requests each
    connection read. With `second_on_reused` "answer", every request gets a stream, as Ollama
    streams. Otherwise each connection's first request gets an HTTP 500 (a short answer read to its
    end) and the second one on it gets: "close" (read, then a close with no answer, as a server
    closing an idle connection just as it arrives), "work-then-close" (the same close 0.8 s later:
    a crash while working on it) or "headers-then-close"."""
    per_connection: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slot = len(per_connection)
        per_connection.append(0)
        try:
            while True:
                await read_request(reader)
                per_connection[slot] += 1
                if second_on_reused == "answer":
                    writer.write(STREAMED_ANSWER)
                elif per_connection[slot] == 1:
                    writer.write(ERROR_ANSWER)
                elif second_on_reused == "close":
                    return
                elif second_on_reused == "work-then-close":
                    await asyncio.sleep(0.8)  # past STALE_CLOSE_S: the server had the request
                    return
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
                    )
                    await writer.drain()
                    return
                await writer.drain()
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = one_connection_client(server, transport, 5.0)
    wire = wire_api("chat")
    records = []
    async with server, client:
        for index in range(2):
            record = RequestRecord(index=index, phase="measured", prompt_index=0, api="chat")
            spec = wire.build_request("m", Prompt("x"), {}, None)
            records.append(await asyncio.wait_for(send_request(client, spec, record, wire.reader), 10))
    return records, per_connection


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_streamed_answer_read_to_its_end_keeps_the_connection_for_the_next_request(transport):
    # The record is complete at the final line; the body's end is read after it, so the
    # connection is kept (httpx closes one whose answer was not read to its end).
    records, per_connection = asyncio.run(two_requests_one_after_the_other("answer", transport))
    assert all(r.ok and len(r.chunk_times_ms) == 1 for r in records), [r.error for r in records]
    assert per_connection == [2]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reused_connection_closed_before_any_answer_sends_the_request_again_on_a_new_one(transport):
    records, per_connection = asyncio.run(two_requests_one_after_the_other("close", transport))
    # The second request was read on the reused connection, closed unanswered, and went again on a
    # new one, whose answer it got: not the close.
    assert per_connection == [2, 1]
    assert [(r.error_class, r.error) for r in records] == [("HTTP500", "scripted")] * 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reused_connection_that_answered_then_closed_fails_the_request_without_a_second_try(transport):
    records, per_connection = asyncio.run(two_requests_one_after_the_other("headers-then-close", transport))
    assert records[0].error_class == "HTTP500"
    assert records[1].error_class == "RemoteProtocolError" and records[1].http_status == 200
    assert per_connection == [2]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reused_connection_closed_after_the_server_worked_on_the_request_fails_it_without_a_second_try(transport):
    records, per_connection = asyncio.run(two_requests_one_after_the_other("work-then-close", transport))
    assert records[0].error_class == "HTTP500" and not records[1].ok
    assert records[1].error == "Server disconnected without sending a response."
    assert per_connection == [2]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_new_connection_closed_before_any_answer_fails_the_request_without_a_second_try(transport):
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    record = asyncio.run(fetch(close_at_once, "chat", transport))
    assert not record.ok and record.error_class == "RemoteProtocolError"
    assert record.error == "Server disconnected without sending a response."


async def pool_order(scenario: Callable[[LoopbackClient], Awaitable[list[str]]]) -> tuple[list[str], int]:
    """Run `scenario` on a one-connection loopback client against a server that only accepts
    connections; returns what it returned and the connections the server saw."""
    accepted = 0

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with server, LoopbackClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", 1, 5.0) as client:
        order = await scenario(client)
    return order, accepted


def waiting_turns(client: LoopbackClient, order: list[str]) -> Callable[[str], asyncio.Task[None]]:
    """A request-to-be that takes a connection, notes its turn and frees the connection at once."""

    async def turn(name: str) -> None:
        conn = await client.acquire()
        order.append(name)
        client.release(conn)

    return lambda name: asyncio.create_task(turn(name), name=name)


def test_the_pool_serves_waiting_requests_in_arrival_order_even_when_a_newer_one_is_due_at_the_release():
    async def scenario(client: LoopbackClient) -> list[str]:
        order: list[str] = []
        start = waiting_turns(client, order)
        held = await client.acquire()
        waiting = [start(name) for name in "BCD"]
        await asyncio.sleep(0.01)  # B, C and D are waiting, in that order
        # E becomes due in the same turn of the loop as the release, and runs before B wakes:
        # it must not take the freed connection, nor send B to the back of the queue.
        late = start("E")
        client.release(held)
        await asyncio.gather(*waiting, late)
        return order

    order, accepted = asyncio.run(pool_order(scenario))
    assert order == ["B", "C", "D", "E"] and accepted == 1


def test_a_dropped_connection_s_place_goes_to_the_oldest_waiting_request():
    async def scenario(client: LoopbackClient) -> list[str]:
        order: list[str] = []
        start = waiting_turns(client, order)
        held = await client.acquire()
        waiting = [start(name) for name in "BC"]
        await asyncio.sleep(0.01)
        late = start("E")
        held.keep_alive = False  # as after a "Connection: close" answer: it cannot be reused
        client.release(held)
        await asyncio.gather(*waiting, late)
        return order

    order, accepted = asyncio.run(pool_order(scenario))
    assert order == ["B", "C", "E"] and accepted == 2  # B opened the new one; C and E reused it


def test_a_request_cancelled_after_a_connection_was_handed_to_it_passes_it_on():
    async def scenario(client: LoopbackClient) -> list[str]:
        order: list[str] = []
        start = waiting_turns(client, order)
        held = await client.acquire()
        b, c = start("B"), start("C")
        await asyncio.sleep(0.01)
        client.release(held)  # handed to B ...
        b.cancel()  # ... which is cancelled before it runs
        await asyncio.gather(b, c, return_exceptions=True)
        return order

    order, accepted = asyncio.run(pool_order(scenario))
    assert order == ["C"] and accepted == 1


@pytest.mark.parametrize(
    "interim", [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"]
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_informational_answer_before_the_real_one_is_skipped(transport, interim):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(interim)
        await writer.drain()
        await asyncio.sleep(0.02)  # the answer's head comes later: TTFB is its arrival, not the 1xx's
        writer.write(NDJSON_ANSWER)
        await writer.drain()

    record = asyncio.run(fetch(script, "chat", transport))
    assert record.ok and record.error is None and record.http_status == 200, record.error
    assert record.ttfb_ms is not None and record.ttfb_ms >= 20 and len(record.chunk_times_ms) == 1


def test_a_switch_of_protocols_fails_the_request_with_a_clear_error():
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)

    record = asyncio.run(fetch(script, "chat", "loopback"))
    assert not record.ok and record.error_class == "RemoteProtocolError"
    assert record.error == "the server switched protocols (101): not an HTTP/1.1 stream"
