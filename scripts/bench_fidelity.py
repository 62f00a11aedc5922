"""How far from the truth is each client's TTFT and ITL? sentinel-exp vs a raw-socket floor vs peers.

One command, one table. For each concurrency (closed loop, default 1, 16, 64, 256) and each client,
a fresh reference server (scripts/reference_server.py: stdlib asyncio, first token 40 ms after the
request arrives, then one every 5 ms, 32 tokens) serves the requests and logs, per request, when
the request arrived and when each token actually went into the kernel. The clients:

- sentinel chat / sentinel openai: the real CLI (`python -m sentinel_exp server=ollama|openai
  server.url=...`, tracking off), its Ollama NDJSON and OpenAI SSE clients and its load generator;
  per-request times come from the run folder's requests.jsonl.
- floor: a minimal raw-socket client (a blocking socket stamping at recv() for c=1, an asyncio
  Protocol stamping in data_received for c>1): what reading the socket costs, nothing more.
- guidellm, aiperf: when installed (`pip install -e '.[peers]'`, or a separate venv given with
  --peers-python), each driving the OpenAI SSE wire with its own CLI and per-request export.

How each figure relates to the truth (all on this machine; each process's clock is
CLOCK_MONOTONIC, perf_counter_ns, and only differences within one process are compared):

- TTFT error = the client's TTFT for a request − (the server's first emit − the request's
  arrival at the server), for the same request. What remains is the request's trip to the
  server, the first token's trip back and the client's own reading: the floor shows how much of
  it loopback itself costs, "excess over floor" what the client adds beyond that.
- ITL error = |client gap − server gap| per consecutive pair of token chunks, for clients that
  keep every chunk's time (sentinel-exp, the floor); for the peers, who report one mean ITL a
  request, |their mean ITL − (last emit − first emit) / (tokens − 1)|.
- Requests are matched by id: sentinel-exp and the floor send a unique prompt per request and
  the server logs it. The peers send their own prompts, so their requests are matched by order
  (the n-th to start at the client is the n-th to arrive at the server); with every request on
  the same schedule a swapped pair differs only by the server's lateness.
- Throughput (requests/s, token chunks/s) counts the measured requests the server finished over
  the window from the first one's arrival to the last one's last emit; client CPU is the client
  process tree's user+system time over the same window (psutil, polled), in % of one core.
- Server late: emit − due over every token, p50/p99; the server is not the bottleneck while
  it stays around a millisecond (asyncio's timers wake on whole milliseconds). It runs as two
  SO_REUSEPORT processes by default: one could not keep up with the floor at c=256.

    python scripts/bench_fidelity.py                      # c = 1, 16, 64, 256
    python scripts/bench_fidelity.py --quick              # c = 1, 16, fewer requests
    python scripts/bench_fidelity.py --concurrency 1 16 --requests 200 --peers-python .venv-peers/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "scripts" / "reference_server.py"
MODEL = "reference"


# ---------------------------------------------------------------------------------------------
# What a client reports and what the server logged
# ---------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as a client reported it (milliseconds from its own t0)."""

    key: str | int  # the request id, or its start order (peers)
    ttft_ms: float
    chunk_ms: list[float] | None = None  # every token chunk, when the client keeps them
    itl_mean_ms: float | None = None  # otherwise its mean ITL


@dataclass
class Truth:
    id: str
    wire: str
    arrival_ns: int
    arrival_wall_ns: int
    due_ns: list[int]
    emit_ns: list[int]


@dataclass
class Case:
    client: str
    concurrency: int
    note: str = ""  # why there are no figures ("not installed", a failure)
    ttft_err: list[float] = field(default_factory=list)
    itl_err: list[float] = field(default_factory=list)
    matched: int = 0
    requests_per_s: float = 0.0
    chunks_per_s: float = 0.0
    cpu_pct: float = 0.0
    late_ms: list[float] = field(default_factory=list)


def read_truth(path: Path) -> list[Truth]:
    if not path.exists():
        return []
    return [Truth(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# The reference server and the client process, with the client's CPU polled
# ---------------------------------------------------------------------------------------------


class ReferenceServer:
    def __init__(self, log: Path, workers: int, loop: str) -> None:
        self.log = log
        args = [
            sys.executable,
            str(SERVER),
            "--port",
            "0",
            "--log",
            str(log),
            "--workers",
            str(workers),
            "--loop",
            loop,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise SystemExit(f"the reference server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@dataclass
class CpuTrace:
    """(CLOCK_MONOTONIC ns, CPU seconds of the client's process tree) samples."""

    at_ns: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def between(self, start_ns: int, end_ns: int) -> float:
        if len(self.at_ns) < 2:
            return float("nan")
        cpu = np.interp([start_ns, end_ns], self.at_ns, self.cpu_s)
        return float(cpu[1] - cpu[0])


def _tree_cpu(proc: psutil.Process, seen: dict[int, float]) -> float:
    """CPU seconds of `proc` and its descendants; a child's last reading is kept once it exits."""
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return sum(seen.values())


def run_client(args: Sequence[str], cwd: Path, timeout_s: float, env: dict[str, str] | None = None) -> CpuTrace:
    """Run a client to completion, polling its CPU every 20 ms; SystemExit with its stderr on failure."""
    trace = CpuTrace()
    log = cwd / "client.log"
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        watched = psutil.Process(proc.pid)
        seen: dict[int, float] = {}
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise ClientFailed(f"timed out after {timeout_s:.0f} s (log: {log})")
            try:
                cpu = _tree_cpu(watched, seen)
            except psutil.Error:
                break
            trace.at_ns.append(time.perf_counter_ns())
            trace.cpu_s.append(cpu)
            time.sleep(0.02)
        proc.wait()
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise ClientFailed(f"exit {proc.returncode}: {tail}")
    return trace


class ClientFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


def request_ids(warmup: int, requests: int) -> tuple[list[str], list[str]]:
    return [f"warm-{i}" for i in range(warmup)], [f"fid-{i}" for i in range(requests)]


def _repo_env() -> dict[str, str]:
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def sentinel(wire: str) -> Callable[[str, int, int, int, Path], tuple[list[Seen], CpuTrace]]:
    def run(url: str, concurrency: int, requests: int, warmup: int, work: Path) -> tuple[list[Seen], CpuTrace]:
        warm, ids = request_ids(warmup, requests)
        prompts = work / "prompts.txt"
        prompts.write_text("\n".join(warm + ids) + "\n", encoding="utf-8")
        server = ["server=openai"] if wire == "openai" else ["server=ollama", "workload.api=chat"]
        args = [
            sys.executable,
            "-m",
            "sentinel_exp",
            *server,
            f"server.url={url}",
            f"model.name={MODEL}",
            f"workload.prompts_file={prompts}",
            f"workload.requests={requests}",
            f"workload.warmup={warmup}",
            f"workload.concurrency={concurrency}",
            "tracking.enabled=false",
            "plots=false",
            "progress=false",
            f"hydra.run.dir={work / 'run'}",
        ]
        trace = run_client(args, work, timeout_s=300, env=_repo_env())
        names = warm + ids
        seen = []
        for line in (work / "run" / "requests.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["phase"] == "measured" and r["ok"]:
                seen.append(Seen(names[r["prompt_index"]], r["ttft_ms"], r["chunk_times_ms"]))
        return seen, trace

    return run


def floor(url: str, concurrency: int, requests: int, warmup: int, work: Path) -> tuple[list[Seen], CpuTrace]:
    out = work / "floor.jsonl"
    args = [sys.executable, __file__, "_floor", url, str(concurrency), str(requests), str(warmup), str(out)]
    trace = run_client(args, work, timeout_s=300)
    seen = [Seen(**json.loads(line)) for line in out.read_text(encoding="utf-8").splitlines()]
    return seen, trace


# --- the floor client, run as `bench_fidelity.py _floor URL C N W OUT` -------------------------

FLOOR_PATH = "/v1/chat/completions"
TOKEN_MARK = b'"content":" '  # a token chunk; the final chunks carry no content or an empty one
END_MARK = b"0\r\n\r\n"  # the last chunk of a chunked body


def _floor_request(host: str, port: int, rid: str) -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": rid}], "stream": True}).encode()
    head = f"POST {FLOOR_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _floor_blocking(host: str, port: int, ids: list[str], keep: list[dict[str, object]]) -> None:
    """c=1: one blocking socket, stamped the moment recv() returns."""
    clock = time.perf_counter_ns
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for rid in ids:
        request = _floor_request(host, port, rid)
        stamps: list[int] = []
        tail = b""
        t0 = clock()
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            now = clock()
            if not data:
                raise SystemExit("the server closed the connection")
            stamps.extend([now] * data.count(TOKEN_MARK))
            tail = (tail + data)[-8:]
            if tail.endswith(END_MARK):
                break
        keep.append({"key": rid, "ttft_ms": (stamps[0] - t0) / 1e6, "chunk_ms": [(s - t0) / 1e6 for s in stamps]})
    sock.close()


class _FloorProtocol(asyncio.Protocol):
    """c>1: one connection per client, each chunk stamped first thing in data_received."""

    def __init__(self, host: str, port: int, ids: list[str], keep: list[dict[str, object]], done: asyncio.Future[None]):
        self.host, self.port, self.ids, self.keep, self.done = host, port, ids, keep, done
        self.transport: asyncio.Transport | None = None
        self.rid = ""
        self.t0 = 0
        self.stamps: list[int] = []
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass of it
        self._next()

    def _next(self) -> None:
        assert self.transport is not None
        if not self.ids:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.rid = self.ids.pop()
        self.stamps, self.tail = [], b""
        request = _floor_request(self.host, self.port, self.rid)
        self.t0 = time.perf_counter_ns()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        self.stamps.extend([now] * data.count(TOKEN_MARK))
        self.tail = (self.tail + data)[-8:]
        if self.tail.endswith(END_MARK):
            t0 = self.t0
            self.keep.append(
                {
                    "key": self.rid,
                    "ttft_ms": (self.stamps[0] - t0) / 1e6,
                    "chunk_ms": [(s - t0) / 1e6 for s in self.stamps],
                }
            )
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _floor_async(host: str, port: int, concurrency: int, ids: list[str], keep: list[dict[str, object]]) -> None:
    loop = asyncio.get_running_loop()
    shared = list(reversed(ids))  # every connection takes the next id from one queue: a closed loop
    done: list[asyncio.Future[None]] = [loop.create_future() for _ in range(concurrency)]
    for fut in done:
        _, proto = await loop.create_connection(
            functools.partial(_FloorProtocol, host, port, shared, keep, fut), host, port
        )
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(*done)


def floor_main(url: str, concurrency: int, requests: int, warmup: int, out: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    warm, ids = request_ids(warmup, requests)
    kept: list[dict[str, object]] = []
    if concurrency == 1:
        _floor_blocking(host, int(port), warm + ids, kept)
    else:
        try:
            import uvloop

            runner: Callable[..., object] = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(_floor_async(host, int(port), concurrency, warm, []))
        runner(_floor_async(host, int(port), concurrency, ids, kept))
    with open(out, "w", encoding="utf-8") as f:
        for row in kept:
            if not str(row["key"]).startswith("warm-"):
                f.write(json.dumps(row) + "\n")


class NotInstalled:
    """A peer that is not there: reported as such, without starting anything."""

    def __call__(self, url: str, c: int, requests: int, warmup: int, work: Path) -> tuple[list[Seen], CpuTrace]:
        raise ClientFailed("not installed")


# A whitespace word-level tokenizer, made locally: the peers count tokens with a Hugging Face
# tokenizer, and nothing may be fetched from a hub. Each " tok" the server sends is one token.
MAKE_TOKENIZER = """
import json, sys
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
words = ["[UNK]", "tok"] + [f"w{i}" for i in range(998)]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.decoder = decoders.WordPiece(prefix="##")
tok.save(str(out / "tokenizer.json"))
config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "model_max_length": 100000}
(out / "tokenizer_config.json").write_text(json.dumps(config))
"""


def _interpreter(cli: str) -> str:
    """The python a console script runs with (its #! line)."""
    first = Path(cli).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def peers(python: str | None) -> dict[str, Runner]:
    """GuideLLM and AIPerf, from the venv of `python` or from PATH; "not installed" otherwise."""
    found: dict[str, str] = {}
    for name in ("guidellm", "aiperf"):
        cli = str(Path(python).parent / name) if python else shutil.which(name)
        if cli and Path(cli).exists():
            found[name] = cli
    tokenizer_dir = Path(tempfile.mkdtemp(prefix="bench-fidelity-tokenizer-"))

    def tokenizer(cli: str) -> Path:
        if not (tokenizer_dir / "tokenizer.json").exists():
            made = subprocess.run(
                [python or _interpreter(cli), "-c", MAKE_TOKENIZER, str(tokenizer_dir)], capture_output=True, text=True
            )
            if made.returncode != 0:
                raise ClientFailed(f"cannot make a local tokenizer: {made.stderr.strip()[-200:]}")
        return tokenizer_dir

    def guidellm(url: str, concurrency: int, requests: int, warmup: int, work: Path) -> tuple[list[Seen], CpuTrace]:
        cli = found["guidellm"]
        out = work / "guidellm.json"
        args = [
            cli,
            "run",
            # The tokenizer is named by the model: its local folder (the server ignores the name).
            "--backend",
            f"kind=openai_http,target={url},model={tokenizer(cli)}",
            "--profile",
            f"kind=concurrent,streams={concurrency}",
            "--constraint",
            f"kind=max_requests,count={requests}",
            "--data",
            "kind=synthetic_text,prompt_tokens=8,output_tokens=32",
            "--output",
            f"kind=json,path={out}",
            "--disable-console-interactive",
        ]
        trace = run_client(args, work, timeout_s=600)
        stats = json.loads(out.read_text(encoding="utf-8"))["benchmarks"][0]["requests"]["successful"]
        stats.sort(key=lambda r: r["request_start_time"])
        seen = [
            Seen(i, r["time_to_first_token_ms"], itl_mean_ms=r["inter_token_latency_ms"]) for i, r in enumerate(stats)
        ]
        return seen, trace

    def aiperf(url: str, concurrency: int, requests: int, warmup: int, work: Path) -> tuple[list[Seen], CpuTrace]:
        cli = found["aiperf"]
        out = work / "aiperf"
        args = [
            cli,
            "profile",
            "--model",
            MODEL,
            "--tokenizer",
            str(tokenizer(cli)),
            "--url",
            url,
            "--endpoint-type",
            "chat",
            "--streaming",
            "--concurrency",
            str(concurrency),
            "--request-count",
            str(requests),
            "--warmup-request-count",
            str(warmup),
            "--isl",
            "8",
            "--osl",
            "32",
            "--artifact-dir",
            str(out),
            "--ui",
            "none",
        ]
        trace = run_client(args, work, timeout_s=600)
        rows = [json.loads(line) for line in (out / "profile_export.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = [
            r
            for r in rows
            if r["metadata"].get("benchmark_phase") == "profiling" and "time_to_first_token" in r["metrics"]
        ]
        rows.sort(key=lambda r: r["metadata"]["request_start_ns"])
        seen = []
        for i, r in enumerate(rows):
            ttft = r["metrics"]["time_to_first_token"]["value"]
            # Every chunk's time: TTFT, then its inter-chunk latencies added up.
            gaps = r["metrics"].get("inter_chunk_latency", {}).get("value", [])
            seen.append(Seen(i, ttft, chunk_ms=[ttft, *(ttft + np.cumsum(gaps)).tolist()]))
        return seen, trace

    runners = {"guidellm": guidellm, "aiperf": aiperf}
    return {name: runners[name] if name in found else NotInstalled() for name in runners}


# ---------------------------------------------------------------------------------------------
# Scoring a case against the server's log
# ---------------------------------------------------------------------------------------------


def score(case: Case, seen: list[Seen], truth: list[Truth], trace: CpuTrace) -> Case:
    by_id = {t.id: t for t in truth}
    if seen and isinstance(seen[0].key, int):
        # Matched by order; the arrivals the peer did not report come first (its warmup).
        ordered = sorted(truth, key=lambda t: t.arrival_ns)[max(0, len(truth) - len(seen)) :]
        pairs = [(s, ordered[int(s.key)]) for s in seen if int(s.key) < len(ordered)]
    else:
        pairs = [(s, by_id[str(s.key)]) for s in seen if str(s.key) in by_id]
    measured = [t for _, t in pairs]
    for s, t in pairs:
        case.ttft_err.append(s.ttft_ms - (t.emit_ns[0] - t.arrival_ns) / 1e6)
        if s.chunk_ms is not None and len(s.chunk_ms) == len(t.emit_ns):
            for k in range(1, len(s.chunk_ms)):
                server_gap = (t.emit_ns[k] - t.emit_ns[k - 1]) / 1e6
                case.itl_err.append(abs((s.chunk_ms[k] - s.chunk_ms[k - 1]) - server_gap))
        elif s.itl_mean_ms is not None and len(t.emit_ns) > 1:
            true_mean = (t.emit_ns[-1] - t.emit_ns[0]) / 1e6 / (len(t.emit_ns) - 1)
            case.itl_err.append(abs(s.itl_mean_ms - true_mean))
        case.late_ms.extend((e - d) / 1e6 for e, d in zip(t.emit_ns, t.due_ns, strict=True))
    case.matched = len(pairs)
    if measured:
        start = min(t.arrival_ns for t in measured)
        end = max(t.emit_ns[-1] for t in measured)
        window_s = (end - start) / 1e9
        case.requests_per_s = len(measured) / window_s
        case.chunks_per_s = sum(len(t.emit_ns) for t in measured) / window_s
        case.cpu_pct = 100 * trace.between(start, end) / window_s
    if not pairs:
        case.note = case.note or "no request matched the server's log"
    return case


# ---------------------------------------------------------------------------------------------
# The run and its table
# ---------------------------------------------------------------------------------------------

Runner = Callable[[str, int, int, int, Path], tuple[list[Seen], CpuTrace]]


def run_case(
    name: str, runner: Runner, concurrency: int, requests: int, warmup: int, root: Path, workers: int, loop: str
) -> Case:
    if isinstance(runner, NotInstalled):
        return Case(name, concurrency, note="not installed")
    work = root / f"{name.replace(' ', '-')}-c{concurrency}"
    work.mkdir()
    server = ReferenceServer(work / "emits.jsonl", workers, loop)
    try:
        seen, trace = runner(server.url, concurrency, requests, warmup, work)
    except ClientFailed as exc:
        return Case(name, concurrency, note=f"failed: {str(exc).strip().splitlines()[-1][:80]}")
    finally:
        server.stop()
    return score(Case(name, concurrency), seen, read_truth(server.log), trace)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def trio(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{pct(values, 50):.2f} / {pct(values, 99):.2f} / {max(values):.2f}"


def table(cases: list[Case], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    columns = (
        "c",
        "client",
        "TTFT err ms p50/p99/max",
        "ITL err ms p50/p99/max",
        "excess over floor p50/p99",
        "req/s",
        "chunks/s",
        "client CPU",
        "server late ms p50/p99",
        "n",
    )
    for col in columns:
        t.add_column(col, justify="left" if col == "client" else "right")
    floors = {c.concurrency: c for c in cases if c.client == "floor" and c.ttft_err}
    for c in cases:
        if c.note:
            t.add_row(str(c.concurrency), c.client, c.note, *[""] * (len(columns) - 3))
            continue
        base = floors.get(c.concurrency)
        excess = "—"
        if base is not None and c.client != "floor":
            p50, p99 = (pct(c.ttft_err, q) - pct(base.ttft_err, q) for q in (50, 99))
            excess = f"{p50:+.2f} / {p99:+.2f}"
        t.add_row(
            str(c.concurrency),
            c.client,
            trio(c.ttft_err),
            trio(c.itl_err),
            excess,
            f"{c.requests_per_s:.0f}",
            f"{c.chunks_per_s:.0f}",
            f"{c.cpu_pct:.0f}%",
            f"{pct(c.late_ms, 50):.2f} / {pct(c.late_ms, 99):.2f}",
            str(c.matched),
        )
    return t


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        url, c, n, w, out = sys.argv[2:7]
        floor_main(url, int(c), int(n), int(w), out)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--requests", type=int, default=100, help="measured requests per case: at least 4 × c")
    parser.add_argument("--quick", action="store_true", help="c = 1 and 16, 40 requests (a minute)")
    parser.add_argument("--clients", nargs="+", default=None, help="a subset: floor sentinel-chat sentinel-openai ...")
    parser.add_argument("--peers-python", default=None, help="the python of a venv holding guidellm and aiperf")
    parser.add_argument(
        "--server-workers", type=int, default=2, help="reference server processes (SO_REUSEPORT): 2 kept up at c=256"
    )
    parser.add_argument("--server-loop", choices=("asyncio", "uvloop"), default="asyncio", help="its event loop")
    parser.add_argument("--keep", default=None, help="keep every case's files in this folder")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.requests = [1, 16], 40
    if args.requests < 1 or any(c < 1 for c in args.concurrency):
        parser.error("--requests and --concurrency must be at least 1")

    runners: dict[str, Runner] = {
        "floor": floor,
        "sentinel chat": sentinel("chat"),
        "sentinel openai": sentinel("openai"),
    }
    runners.update(peers(args.peers_python))
    names = {n.replace(" ", "-"): n for n in runners}
    unknown = sorted(set(args.clients or ()) - set(names))
    if unknown:
        parser.error(f"unknown client(s) {', '.join(unknown)}: choose from {' '.join(names)}")
    wanted = [name for short, name in names.items() if args.clients is None or short in args.clients]
    console = Console(width=max(Console().width, 180))
    load = os.getloadavg()
    cases: list[Case] = []
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for c in args.concurrency:
            n = max(args.requests, 4 * c)
            for name in wanted:
                console.print(f"[dim]c={c} {name}: {n} requests[/]")
                case = run_case(name, runners[name], c, n, c, root, args.server_workers, args.server_loop)
                cases.append(case)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    title = (
        f"client error vs the server's true emit times (first token 40 ms, then every 5 ms, 32 tokens; "
        f"{os.cpu_count()} CPUs, load {load[0]:.2f} at start)"
    )
    console.print(table(cases, title))


if __name__ == "__main__":
    main()
