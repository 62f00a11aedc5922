"""Summary statistics over request records: pure functions, no I/O (see docs/measurement.md, Metrics).

Only successful requests of the measured phase enter latency statistics; warmup and failed
or cancelled requests are counted, never averaged in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from sentinel_exp.records import RequestRecord

PERCENTILES = (50, 90, 95, 99)


def describe(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99/mean/min/max; empty input gives no keys rather than NaN."""
    if len(values) == 0:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=False)}
    out.update(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()))
    return out


def successful(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.measured and r.ok]


def inter_token_latencies(record: RequestRecord) -> list[float]:
    times = record.chunk_times_ms
    return [b - a for a, b in itertools.pairwise(times)]


def output_tokens(record: RequestRecord) -> int:
    """Server-counted tokens (eval_count); token chunks only if the server gave no count."""
    return record.eval_count if record.eval_count is not None else len(record.chunk_times_ms)


def time_per_output_token(record: RequestRecord) -> float | None:
    tokens = output_tokens(record)
    if record.e2e_ms is None or record.ttft_ms is None or tokens < 2:
        return None
    return (record.e2e_ms - record.ttft_ms) / (tokens - 1)


def latency_samples(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    """Client latencies, then the server-side breakdown of where the time went (Ollama's
    durations joined with the client's timings)."""
    ok = successful(records)
    samples: dict[str, list[float]] = {
        "ttfb": [r.ttfb_ms for r in ok if r.ttfb_ms is not None],
        "ttft": [r.ttft_ms for r in ok if r.ttft_ms is not None],
        "itl": [gap for r in ok for gap in inter_token_latencies(r)],
        "tpot": [t for r in ok if (t := time_per_output_token(r)) is not None],
        "e2e": [r.e2e_ms for r in ok if r.e2e_ms is not None],
        "queue": [r.queue_ms for r in ok if r.queue_ms is not None],
        "server_load": [r.load_duration_ms for r in ok if r.load_duration_ms is not None],
        "server_prefill": [r.prompt_eval_duration_ms for r in ok if r.prompt_eval_duration_ms is not None],
        "server_decode": [r.eval_duration_ms for r in ok if r.eval_duration_ms is not None],
        "ttft_other": [
            r.ttft_ms - r.load_duration_ms - r.prompt_eval_duration_ms
            for r in ok
            if r.ttft_ms is not None and r.load_duration_ms is not None and r.prompt_eval_duration_ms is not None
        ],
        # The server's time outside load, prefill and decode: mostly waiting for a free slot.
        "server_queue": [
            _clock_noise_to_zero(
                r.total_duration_ms - r.load_duration_ms - r.prompt_eval_duration_ms - r.eval_duration_ms
            )
            for r in ok
            if r.total_duration_ms is not None
            and r.load_duration_ms is not None
            and r.prompt_eval_duration_ms is not None
            and r.eval_duration_ms is not None
        ],
        "client_overhead": [
            r.e2e_ms - r.total_duration_ms for r in ok if r.e2e_ms is not None and r.total_duration_ms is not None
        ],
    }
    return samples


def _clock_noise_to_zero(residual_ms: float) -> float:
    # The four durations are clocked at slightly different points: a residual a little below 0
    # means none. A larger negative one is kept, as it points at the server's own accounting.
    return 0.0 if -1.0 < residual_ms < 0.0 else residual_ms


def is_cold(record: RequestRecord, cold_load_ms: float) -> bool | None:
    if record.load_duration_ms is None:
        return None
    return record.load_duration_ms > cold_load_ms


def latency_metrics(records: Sequence[RequestRecord], suffix: str = "") -> dict[str, float]:
    """`<name>_ms_<stat><suffix>` for every latency sample of `records` (see latency_samples)."""
    return {
        f"{name}_ms_{stat}{suffix}": value
        for name, values in latency_samples(records).items()
        for stat, value in describe(values).items()
    }


def warm_cold_metrics(records: Sequence[RequestRecord]) -> dict[str, float]:
    """The latency metrics again over warm requests only (`_warm`) and cold ones only (`_cold`), so
    a few cold loads do not hide in, or inflate, every percentile. Nothing where no request says
    whether it was cold (record.cold is None: the server reports no load_duration)."""
    if all(r.cold is None for r in records if r.measured):
        return {}
    warm = [r for r in records if r.cold is False]
    cold = [r for r in records if r.cold is True]
    return latency_metrics(warm, "_warm") | latency_metrics(cold, "_cold")


def summarize(records: Sequence[RequestRecord], measured_duration_s: float | None = None) -> dict[str, float]:
    """The per-run summary metrics, named as MLflow will store them."""
    measured = [r for r in records if r.measured]
    ok = successful(records)
    failed = [r for r in measured if not r.ok and not r.cancelled]
    metrics = latency_metrics(records)
    metrics.update(warm_cold_metrics(records))
    for stat, value in describe([float(output_tokens(r)) for r in ok]).items():
        metrics[f"output_tokens_{stat}"] = value

    decode_rates = [1000.0 / t for r in ok if (t := time_per_output_token(r)) is not None and t > 0]
    if decode_rates:
        metrics["output_tokens_per_s"] = float(np.median(decode_rates))
    server_rates = [
        r.eval_count / (r.eval_duration_ms / 1000.0)
        for r in ok
        if r.eval_count and r.eval_duration_ms and r.eval_duration_ms > 0
    ]
    if server_rates:
        metrics["server_eval_tokens_per_s"] = float(np.median(server_rates))
    prefill_rates = [
        r.prompt_eval_count / (r.prompt_eval_duration_ms / 1000.0)
        for r in ok
        if r.prompt_eval_count and r.prompt_eval_duration_ms and r.prompt_eval_duration_ms > 0
    ]
    if prefill_rates:
        metrics["prefill_tokens_per_s"] = float(np.median(prefill_rates))
    total_tokens = sum(output_tokens(r) for r in ok)
    metrics["output_tokens_total"] = float(total_tokens)
    if measured_duration_s and measured_duration_s > 0:
        metrics["throughput_tokens_per_s"] = total_tokens / measured_duration_s
        metrics["requests_per_s"] = len(ok) / measured_duration_s
        metrics["measured_duration_s"] = measured_duration_s

    metrics["requests_ok"] = float(len(ok))
    metrics["requests_failed"] = float(len(failed))
    metrics["requests_cancelled"] = float(sum(1 for r in measured if r.cancelled))
    finished = len(ok) + len(failed)
    metrics["error_rate"] = len(failed) / finished if finished else 0.0
    # Unknown is not 0: a server that reports no load_duration (OpenAI API) leaves it out.
    if any(r.cold is not None for r in measured):
        metrics["cold_starts"] = float(sum(1 for r in measured if r.cold))
    return metrics


def error_breakdown(records: Iterable[RequestRecord]) -> dict[str, int]:
    """Failed measured requests by error class, for the console and summary.json."""
    counts: dict[str, int] = {}
    for r in records:
        if r.measured and not r.ok and not r.cancelled:
            key = r.error_class or "Unknown"
            counts[key] = counts.get(key, 0) + 1
    return counts


def open_loop_warnings(metrics: dict[str, float], rate: float | None, concurrency: int) -> list[str]:
    """An open loop whose arrivals had to wait for a free client did not offer the load it was
    asked to: its latencies describe a saturated server, and say so."""
    waited = metrics.get("queue_ms_p95")
    if rate is None or waited is None or waited <= max(1000.0 / rate, 10.0):
        return []
    return [
        f"arrivals at workload.rate={rate:g}/s outran {concurrency} concurrent client(s): 5% of requests "
        f"waited {waited:,.0f} ms or more for a free client (queue_ms), so the server did not see the "
        f"arrivals as offered; raise workload.concurrency (the server queues requests itself) or lower "
        f"workload.rate"
    ]
