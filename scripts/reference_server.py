"""A reference streaming server for measuring clients: no framework, stdlib asyncio streams only.

It speaks both wires sentinel-exp reads, each token written at a known time after the request
has arrived (default: the first at 40 ms, then one every 5 ms, 32 tokens):

- OpenAI SSE: `POST /v1/chat/completions` (`GET /v1/models` for preflight);
- Ollama NDJSON: `POST /api/chat` (`GET /api/version`, `/api/tags`, `/api/ps`, `POST /api/show`).

For every streamed request it logs, as one JSON line, the request's id (the content of its last
message: the benchmark sends a unique one per request), when it arrived (its body read) and when
each token actually went into the kernel (`time.perf_counter_ns()`, i.e. CLOCK_MONOTONIC, read
after the write and its drain), beside when it was due. Those emit times are the truth a client's
TTFT and ITL are compared with (scripts/bench_fidelity.py). Its own lateness (emit − due) says
whether the server kept its schedule, i.e. was not the bottleneck.

    python scripts/reference_server.py --port 0 --log emits.jsonl   # prints "READY <port>"
    python scripts/reference_server.py --workers 2                  # SO_REUSEPORT worker processes

Loopback only. SIGTERM or SIGINT flushes the log and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

MODEL = "reference"
HOST = "127.0.0.1"
TOKEN = " tok"  # one word: one token for any whitespace tokenizer a peer counts with


@dataclass(frozen=True)
class Schedule:
    first_ms: float = 40.0
    itl_ms: float = 5.0
    tokens: int = 32

    def due_ns(self, arrival_ns: int, k: int) -> int:
        return arrival_ns + round((self.first_ms + k * self.itl_ms) * 1e6)


class EmitLog:
    """The per-request lines, kept in memory and appended to the file now and then (never per
    request: a write syscall per request would sit in the server's loop). One os.write per flush
    on an O_APPEND file, so worker processes sharing it never interleave inside a line."""

    def __init__(self, path: str | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else None
        self._lines: list[str] = []

    def add(self, entry: dict[str, Any]) -> None:
        if self._fd is not None:
            self._lines.append(json.dumps(entry, separators=(",", ":")))

    def flush(self) -> None:
        if self._fd is not None and self._lines:
            data, self._lines = ("\n".join(self._lines) + "\n").encode(), []
            os.write(self._fd, data)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (Transfer-Encoding: chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


# What preflight reads (sentinel_exp/clients: OllamaApi.preflight, OpenAIChat.preflight; the peers' checks).
_DETAILS = {"family": "reference", "parameter_size": "0", "quantization_level": "none"}
_TAG = {"name": MODEL, "model": MODEL, "digest": "0" * 64, "size": 1, "details": _DETAILS}
_STATIC = {
    ("GET", "/api/version"): {"version": "0.0.0-reference"},
    ("GET", "/api/tags"): {"models": [_TAG]},
    ("GET", "/api/ps"): {"models": [{**_TAG, "size_vram": 0}]},
    ("POST", "/api/show"): {"details": _DETAILS, "model_info": {"reference.context_length": 4096}},
    ("GET", "/health"): {"status": "ok"},  # GuideLLM's backend check
    ("GET", "/v1/models"): {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "reference"}]},
}


def _request_id(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else body.get("prompt")
    if isinstance(last, list):  # OpenAI content parts
        last = " ".join(str(p.get("text", "")) for p in last if isinstance(p, dict))
    return str(last or "")[:200]


class Wire:
    """How one wire frames a token and the end of the stream."""

    content_type: str

    def token(self, text: str) -> bytes:
        raise NotImplementedError

    def end(self, body: dict[str, Any], sched: Schedule, arrival_ns: int, now_ns: int) -> bytes:
        raise NotImplementedError


class OpenAISse(Wire):
    content_type = "text/event-stream"

    def token(self, text: str) -> bytes:
        chunk = {
            "id": "chatcmpl-ref",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
        }
        return b"data: " + _json(chunk) + b"\n\n"

    def end(self, body: dict[str, Any], sched: Schedule, arrival_ns: int, now_ns: int) -> bytes:
        base = {"id": "chatcmpl-ref", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
        out = b"data: " + _json({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 1, "completion_tokens": sched.tokens, "total_tokens": sched.tokens + 1}
            out += b"data: " + _json({**base, "choices": [], "usage": usage}) + b"\n\n"
        return out + b"data: [DONE]\n\n"


class OllamaNdjson(Wire):
    content_type = "application/x-ndjson"

    def token(self, text: str) -> bytes:
        chunk = {"model": MODEL, "created_at": "", "message": {"role": "assistant", "content": text}, "done": False}
        return _json(chunk) + b"\n"

    def end(self, body: dict[str, Any], sched: Schedule, arrival_ns: int, now_ns: int) -> bytes:
        prefill_ns = round(sched.first_ms * 1e6)
        final = {
            "model": MODEL,
            "created_at": "",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": now_ns - arrival_ns,
            "load_duration": 0,
            "prompt_eval_count": 1,
            "prompt_eval_duration": prefill_ns,
            "eval_count": sched.tokens,
            "eval_duration": max(0, now_ns - arrival_ns - prefill_ns),
        }
        return _json(final) + b"\n"


STREAMS: dict[str, Wire] = {"/v1/chat/completions": OpenAISse(), "/api/chat": OllamaNdjson()}


class Server:
    def __init__(self, sched: Schedule, log: EmitLog) -> None:
        self.sched = sched
        self.log = log

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request of a keep-alive connection; False once the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        arrival_ns, arrival_wall_ns = time.perf_counter_ns(), time.time_ns()
        path = target.split("?", 1)[0].rstrip("/") or "/"
        keep = headers.get("connection", "").lower() != "close"
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        if (method, path) in _STATIC:
            writer.write(_response("200 OK", _json(_STATIC[(method, path)])))
        elif method == "POST" and path in STREAMS:
            if not isinstance(body, dict) or not body.get("messages"):
                writer.write(_response("400 Bad Request", _json({"error": "messages are required"})))
            elif body.get("stream", path == "/api/chat") is False:
                writer.write(_response("200 OK", _json(self._whole(path))))
            else:
                await self._stream(writer, STREAMS[path], body, arrival_ns, arrival_wall_ns)
        else:
            writer.write(_response("404 Not Found", _json({"error": f"no route {method} {path}"})))
        await writer.drain()
        return keep

    def _whole(self, path: str) -> dict[str, Any]:
        text = TOKEN * self.sched.tokens
        if path == "/api/chat":
            return {"model": MODEL, "message": {"role": "assistant", "content": text}, "done": True}
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    async def _stream(
        self, writer: asyncio.StreamWriter, wire: Wire, body: dict[str, Any], arrival_ns: int, arrival_wall_ns: int
    ) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {wire.content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sched, clock, sleep = self.sched, time.perf_counter_ns, asyncio.sleep
        emits: list[int] = []
        dues: list[int] = []
        for k in range(sched.tokens):
            due = sched.due_ns(arrival_ns, k)
            wait = due - clock()
            if wait > 0:
                await sleep(wait / 1e9)
            writer.write(_chunk(wire.token(TOKEN)))
            await writer.drain()
            emits.append(clock())
            dues.append(due)
        writer.write(_chunk(wire.end(body, sched, arrival_ns, clock())) + b"0\r\n\r\n")
        self.log.add(
            {
                "id": _request_id(body),
                "wire": "openai" if isinstance(wire, OpenAISse) else "chat",
                "arrival_ns": arrival_ns,
                "arrival_wall_ns": arrival_wall_ns,
                "due_ns": dues,
                "emit_ns": emits,
            }
        )


async def serve(sock: socket.socket, sched: Schedule, log: EmitLog, ready: int | None) -> None:
    server = Server(sched, log)
    listener = await asyncio.start_server(server.handle, sock=sock, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Ready only now that SIGTERM flushes the log and ends the server cleanly.
    if ready is None:
        print(f"READY {sock.getsockname()[1]}", flush=True)
    else:
        os.write(ready, b".")
        os.close(ready)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(1.0)
            log.flush()

    flushing = asyncio.create_task(flusher())
    await stop.wait()
    flushing.cancel()
    listener.close()
    log.flush()


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    return sock


def _run(sock: socket.socket, sched: Schedule, log_path: str | None, loop: str, ready: int | None) -> None:
    sock.listen(4096)
    log = EmitLog(log_path)
    if loop == "uvloop":
        import uvloop

        uvloop.run(serve(sock, sched, log, ready))
    else:
        asyncio.run(serve(sock, sched, log, ready))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed as READY <port>)")
    parser.add_argument("--log", default=None, help="JSONL file the true emit times are appended to")
    parser.add_argument("--first-ms", type=float, default=40.0, help="first token this long after the request")
    parser.add_argument("--itl-ms", type=float, default=5.0, help="then one token every this many ms")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.tokens < 1 or args.workers < 1 or args.first_ms < 0 or args.itl_ms < 0:
        parser.error("--tokens and --workers must be at least 1, --first-ms and --itl-ms not negative")
    sched = Schedule(args.first_ms, args.itl_ms, args.tokens)

    # The parent's socket holds the port; each worker listens on its own socket bound to it.
    reserve = _listener(args.port)
    port = reserve.getsockname()[1]
    if args.workers == 1:
        _run(reserve, sched, args.log, args.loop, None)
        return
    children: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # Before the first fork: a SIGTERM at any point from here on reaches every worker (none is orphaned).
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    read_end, write_end = os.pipe()
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(read_end)
            reserve.close()
            _run(_listener(port), sched, args.log, args.loop, write_end)
            os._exit(0)
        children.append(pid)
    os.close(write_end)
    got = 0
    while got < args.workers:
        byte = os.read(read_end, args.workers)
        if not byte:
            forward(signal.SIGTERM, None)
            sys.exit("a worker ended before it was listening")
        got += len(byte)
    print(f"READY {port}", flush=True)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
