"""How late does the client see the first token? sentinel-exp's client vs a plain httpx loop.

The bundled simulated server stamps `x-sentinel-first-chunk-ns` (time.perf_counter_ns, i.e.
CLOCK_MONOTONIC, shared by every process on this machine) just before it writes the headers and
the first token. The difference between the client's first-token timestamp and that stamp is
the client's own read latency, the error it adds to TTFT. Measured side by side, alternating:

- sentinel: sentinel_exp.clients (t0 from httpx's trace hook, bytes stamped on arrival);
- naive:    a plain httpx loop with aiter_lines() and json.loads on every line, as most
            hand-written benchmark scripts do.

Also reported: each client's TTFT minus the injected ttft_ms (what a user would read as error).

    python scripts/bench_client_overhead.py --requests 200 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentinel_exp import eventloop
from sentinel_exp.clients import send_request, wire_api
from sentinel_exp.names import Api, Phase, ServerKind
from sentinel_exp.records import RequestRecord
from sentinel_exp.serve.launch import running_server
from sentinel_exp.serve.sim_settings import SimSettings

MODEL = "smollm2:135m"
CHAT = wire_api(Api.chat)


async def sentinel_one(client: httpx.AsyncClient, first_token_abs: list[int]) -> tuple[float, float]:
    """(read latency ms, ttft ms) for sentinel-exp's client."""
    spec = CHAT.build_request(MODEL, "hello", 0, None, {"num_predict": 8}, None)
    record = RequestRecord(index=0, phase=Phase.MEASURED, prompt_index=0, api="chat")
    stamps: dict[str, int] = {}

    async def consume(response: httpx.Response, times: object) -> None:
        stamps["server"] = int(response.headers["x-sentinel-first-chunk-ns"])
        stamps["t0"] = times.t0  # type: ignore[attr-defined]
        await CHAT.consume(response, times)  # type: ignore[arg-type]

    await send_request(client, spec, record, consume)
    first_abs = stamps["t0"] + int(record.ttft_ms * 1e6)
    return (first_abs - stamps["server"]) / 1e6, record.ttft_ms


async def naive_one(client: httpx.AsyncClient) -> tuple[float, float]:
    """(read latency ms, ttft ms) for a typical hand-written httpx loop."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "options": {"num_predict": 8}}
    start = time.perf_counter_ns()
    first = None
    async with client.stream("POST", "/api/chat", json=body) as response:
        server = int(response.headers["x-sentinel-first-chunk-ns"])
        async for line in response.aiter_lines():
            chunk = json.loads(line)
            if first is None and chunk.get("message", {}).get("content"):
                first = time.perf_counter_ns()
    assert first is not None
    return (first - server) / 1e6, (first - start) / 1e6


async def measure(url: str, kind: str, requests: int, concurrency: int) -> tuple[list[float], list[float]]:
    lat: list[float] = []
    ttft: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_connections=concurrency), trust_env=False
    ) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                a, b = await (sentinel_one(client, []) if kind == "sentinel" else naive_one(client))
                lat.append(a)
                ttft.append(b)

        # Warm the connections first.
        await asyncio.gather(*(worker(1) for _ in range(concurrency)))
        lat.clear()
        ttft.clear()
        await asyncio.gather(*(worker(max(1, requests // concurrency)) for _ in range(concurrency)))
    return lat, ttft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--ttft-ms", type=float, default=40.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two clients")
    args = parser.parse_args()
    sim = SimSettings(load_ms=0.0, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)
    with running_server(ServerKind.simulated, sim.to_args()) as server:
        url = server.url
        print(f"simulated server {url}: ttft {args.ttft_ms} ms, itl {args.itl_ms} ms; {os.cpu_count()} CPUs")
        print(
            f"{'concurrency':>11} {'client':>9} {'read p50':>9} {'read p99':>9} {'ttft-inj p50':>13} "
            f"{'ttft-inj p99':>13}   (ms; n per client)"
        )
        for concurrency in args.concurrency:
            results: dict[str, tuple[list[float], list[float]]] = {"sentinel": ([], []), "naive": ([], [])}
            for _ in range(args.rounds):
                for kind in ("sentinel", "naive"):
                    lat, ttft = eventloop.run(measure(url, kind, args.requests // args.rounds, concurrency))
                    results[kind][0].extend(lat)
                    results[kind][1].extend(ttft)
            for kind, (lat, ttft) in results.items():
                err = np.asarray(ttft) - args.ttft_ms
                print(
                    f"{concurrency:>11} {kind:>9} {np.percentile(lat, 50):9.3f} {np.percentile(lat, 99):9.3f} "
                    f"{np.percentile(err, 50):13.3f} {np.percentile(err, 99):13.3f}   n={len(lat)}"
                )


if __name__ == "__main__":
    main()
