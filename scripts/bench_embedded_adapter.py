"""What the embedded server adds on top of llama-cpp-python itself.

Runs the same chat prompts through (a) `python -m sentinel_exp.serve --engine embedded` over
loopback HTTP with an httpx streaming client and (b) llama-cpp-python in this process
(`create_chat_completion(stream=True)`), alternating one request each, never at the same time,
with the same GGUF, n_ctx, n_threads, max_tokens and greedy sampling. Both sides see the same
prompt sequence, so llama.cpp's prefix cache helps both alike.

Prints the adapter's added TTFT at p50 (goal < 2 ms) and the decode rate through the server as a
fraction of the in-process one (goal >= 0.95).

    python scripts/bench_embedded_adapter.py [--requests 20] [--warmup 3] [--max-tokens 48] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sentinel_exp.names import ServerKind  # noqa: E402
from sentinel_exp.serve.engines import registry  # noqa: E402
from sentinel_exp.serve.engines.llamacpp import import_llama_cpp, llama_kwargs  # noqa: E402
from sentinel_exp.serve.launch import running_server  # noqa: E402
from sentinel_exp.serve.sim_settings import SimSettings  # noqa: E402
from sentinel_exp.serve.threads import usable_cpus  # noqa: E402
from sentinel_exp.serve.wire import runner_options  # noqa: E402

PROMPTS = (
    "Write a long story about a dragon who guards a library.",
    "Explain in detail how a steam engine works.",
    "Describe a walk through a busy market in a coastal town.",
    "Write a long letter to a friend about your summer holidays.",
    "Explain step by step how to bake a loaf of bread.",
)
# Greedy, with Ollama's default repeat penalty (what the server applies when not told otherwise).
SIM_TTFT_MS = 40.0
SAMPLING = {"temperature": 0.0, "seed": 42, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1}


@dataclass
class Sample:
    ttft_ms: float
    e2e_ms: float
    tokens: int
    decode_tok_s: float
    text: str
    server_ttft_ms: float = float("nan")  # load_duration + prompt_eval_duration, as the server saw it
    ttft_after_body_ms: float = float("nan")  # clock started once the request body was sent


def decode_rate(tokens: int, first_ns: int, last_ns: int) -> float:
    return (tokens - 1) / ((last_ns - first_ns) / 1e9) if tokens > 1 and last_ns > first_ns else float("nan")


def via_server(client: httpx.Client, prompt: str, options: dict[str, Any], model: str = registry.BUNDLED_TAG) -> Sample:
    t0 = sent = 0

    def trace(event: str, info: dict[str, Any]) -> None:
        nonlocal t0, sent
        # The clock starts when the request goes onto the socket (see docs/measurement.md, Clock points); the
        # second stamp leaves out httpx's own work between sending the headers and the body.
        if event == "http11.send_request_headers.started":
            t0 = time.perf_counter_ns()
        elif event == "http11.send_request_body.complete":
            sent = time.perf_counter_ns()

    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "options": options}
    first = last = 0
    parts: list[str] = []
    final: dict[str, Any] = {}
    with client.stream("POST", "/api/chat", json=body, extensions={"trace": trace}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            chunk = json.loads(line)
            if chunk.get("done"):
                final = chunk
                break
            if chunk["message"]["content"]:
                last = time.perf_counter_ns()
                first = first or last
                parts.append(chunk["message"]["content"])
    end = time.perf_counter_ns()
    tokens = final["eval_count"]
    inside = (final["load_duration"] + final["prompt_eval_duration"]) / 1e6
    return Sample(
        (first - t0) / 1e6,
        (end - t0) / 1e6,
        tokens,
        decode_rate(tokens, first, last),
        "".join(parts),
        inside,
        (first - sent) / 1e6,
    )


def in_process(llm: Any, prompt: str, max_tokens: int) -> Sample:
    t0 = time.perf_counter_ns()
    stream = llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        max_tokens=max_tokens,
        temperature=SAMPLING["temperature"],
        seed=SAMPLING["seed"],
        top_k=SAMPLING["top_k"],
        top_p=SAMPLING["top_p"],
        min_p=SAMPLING["min_p"],
        repeat_penalty=SAMPLING["repeat_penalty"],
    )
    first = last = 0
    parts: list[str] = []
    for chunk in stream:
        content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
        if content:
            last = time.perf_counter_ns()
            first = first or last
            parts.append(content)
    end = time.perf_counter_ns()
    # Streamed chunks carry no usage; for these English answers one chunk is one token.
    tokens = len(parts)
    return Sample((first - t0) / 1e6, (end - t0) / 1e6, tokens, decode_rate(tokens, first, last), "".join(parts))


def p50(values: list[float]) -> float:
    return statistics.median(values)


def http_floor(requests: int, pause_ms: float) -> tuple[float, float]:
    """TTFT the HTTP app and this client add by themselves: the simulated engine writes its first
    token exactly SIM_TTFT_MS after the request arrives; returns p50 excess for both clock starts."""
    samples: list[Sample] = []
    sim = SimSettings(load_ms=0.0, ttft_ms=SIM_TTFT_MS)
    with (
        running_server(ServerKind.simulated, sim.to_args(), timeout_s=120) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for i in range(requests + 3):
            time.sleep(pause_ms / 1000)
            sample = via_server(client, PROMPTS[0], {"num_predict": 2}, model="smollm2:135m")
            if i >= 3:
                samples.append(sample)
    return (p50([s.ttft_ms for s in samples]) - SIM_TTFT_MS, p50([s.ttft_after_body_ms for s in samples]) - SIM_TTFT_MS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="measured requests per side")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests per side first")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=usable_cpus())
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--pause-ms", type=float, default=50.0, help="idle gap between requests")
    args = parser.parse_args()

    path = registry.bundled_model_path()
    if path is None:
        raise SystemExit(f"the bundled model is missing ({registry.EXTRA_HINT})")
    llama_cpp = import_llama_cpp()
    runner = runner_options({"num_ctx": args.ctx, "num_thread": args.threads})
    options = {**runner, "use_mmap": True, "num_predict": args.max_tokens, **SAMPLING}
    llm = llama_cpp.Llama(str(path), **llama_kwargs(runner))

    server: list[Sample] = []
    local: list[Sample] = []
    try:
        with (
            running_server(ServerKind.embedded, timeout_s=120) as embedded,
            httpx.Client(base_url=embedded.url, timeout=120) as client,
        ):
            for i in range(args.warmup + args.requests):
                prompt = PROMPTS[i % len(PROMPTS)]
                # Alternate which side goes first so neither always follows the other's activity.
                order = ("server", "local") if i % 2 == 0 else ("local", "server")
                results: dict[str, Sample] = {}
                for side in order:
                    time.sleep(args.pause_ms / 1000)
                    results[side] = (
                        via_server(client, prompt, options)
                        if side == "server"
                        else in_process(llm, prompt, args.max_tokens)
                    )
                if i >= args.warmup:
                    server.append(results["server"])
                    local.append(results["local"])
    finally:
        llm.close()

    floor_headers, floor_body = http_floor(args.requests, args.pause_ms)
    paired = [s.ttft_ms - loc.ttft_ms for s, loc in zip(server, local, strict=False)]
    added = p50([s.ttft_ms for s in server]) - p50([s.ttft_ms for s in local])
    added_body = p50([s.ttft_after_body_ms for s in server]) - p50([s.ttft_ms for s in local])
    ratio = p50([s.decode_tok_s for s in server]) / p50([s.decode_tok_s for s in local])
    same = sum(s.text == loc.text for s, loc in zip(server, local, strict=False))
    print(
        f"embedded adapter benchmark: {registry.BUNDLED_TAG} ({path.name}), n_threads={args.threads}, "
        f"n_ctx={args.ctx}, max_tokens={args.max_tokens}, greedy; {args.requests} requests per side after "
        f"{args.warmup} warmup, alternating, {len(PROMPTS)} prompts; {usable_cpus()} CPUs"
    )
    print(f"{'':26}{'p50 TTFT ms':>12}{'p50 decode tok/s':>18}{'p50 E2E ms':>12}{'p50 tokens':>12}")
    for name, samples in (("in-process llama-cpp", local), ("server via httpx", server)):
        print(
            f"{name:26}{p50([s.ttft_ms for s in samples]):12.2f}{p50([s.decode_tok_s for s in samples]):18.1f}"
            f"{p50([s.e2e_ms for s in samples]):12.1f}{p50([float(s.tokens) for s in samples]):12.0f}"
        )
    print(f"{'server, t0 = body sent':26}{p50([s.ttft_after_body_ms for s in server]):12.2f}")
    print(
        f"adapter added TTFT p50: {added:+.2f} ms with t0 = request headers start (docs/measurement.md), "
        f"{added_body:+.2f} ms with t0 = request body sent (goal < 2 ms)"
    )
    print(
        f"  paired per-request difference (headers start) p50 {p50(paired):+.2f} ms, min {min(paired):+.2f}, "
        f"max {max(paired):+.2f}"
    )
    inside = p50([s.server_ttft_ms for s in server])
    print(
        f"  server-side TTFT (load_duration + prompt_eval_duration) p50 {inside:.2f} ms; client TTFT minus "
        f"that (HTTP, JSON, client) p50 {p50([s.ttft_ms - s.server_ttft_ms for s in server]):.2f} ms"
    )
    print(
        f"  HTTP floor of the app + httpx alone (simulated engine, TTFT - {SIM_TTFT_MS:.0f} ms): "
        f"{floor_headers:+.2f} ms (headers start), {floor_body:+.2f} ms (body sent)"
    )
    print(f"server decode rate / in-process: {ratio:.3f} (goal >= 0.95)")
    print(f"identical answers on both sides: {same}/{len(server)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
