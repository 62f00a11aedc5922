"""The names of the metrics a run logs, so that a target or an objective naming one that does not
exist is refused before anything is measured, with the nearest real name (pure: names only). The
metric catalogue (metrics.py) says how the metrics it shows are labelled and judged; this module
lists every name a run can log, shown or not.

Latency metrics are `<family>_ms_<statistic>`, and again over warm and cold requests alone with
`_warm` / `_cold` after it (stats.latency_metrics, stats.warm_cold_metrics); the rest are listed.
"""

from __future__ import annotations

import difflib
import re

from sentinel_exp.analysis.metrics import LATENCIES

# The latency families of the metric catalogue (analysis/metrics.py), stats.latency_samples' keys.
LATENCY_FAMILIES = tuple(latency.name for latency in LATENCIES)
# stats.describe's keys.
STATISTICS = ("p50", "p90", "p95", "p99", "mean", "min", "max")

_SUMMARY = (
    *(f"output_tokens_{stat}" for stat in STATISTICS),
    "output_tokens_per_s",
    "server_eval_tokens_per_s",
    "prefill_tokens_per_s",
    "output_tokens_total",
    "throughput_tokens_per_s",
    "requests_per_s",
    "measured_duration_s",
    "requests_ok",
    "requests_failed",
    "requests_cancelled",
    "error_rate",
    "cold_starts",
)
# telemetry/summary.py summarize_telemetry, monitor.py, the server's /api/ps, slo.py.
_TELEMETRY = (
    "cpu_pct_mean",
    "cpu_pct_max",
    "server_cpu_pct_mean",
    "server_cpu_pct_max",
    "server_rss_mb_max",
    "client_cpu_pct_mean",
    "client_cpu_pct_max",
    "other_cpu_pct_mean",
    "mem_used_mb_max",
    "gpu_util_pct_mean",
    "gpu_util_pct_max",
    "gpu_mem_mb_max",
    "gpu_power_w_mean",
    "gpu_energy_j",
    "energy_j_per_token",
    "gpu_temp_c_max",
    "gpu_sm_clock_mhz_mean",
    "telemetry_samples",
    "telemetry_overhead_core_pct",
    "model_size_mb",
    "model_size_vram_mb",
    "gpu_offload_fraction",
    "slo_request_fraction",
    "goodput_requests_per_s",
)
# diagnosis.py: the share of each part in TTFT and E2E.
_SHARES = tuple(
    f"{latency}_share_{part}"
    for latency in ("ttft", "e2e")
    for part in ("load", "queue", "prefill", "decode", "other", "ttfb", "after_ttfb", "ttft")
)


def latency_metric_names() -> list[str]:
    return [
        f"{family}_ms_{stat}{suffix}"
        for family in LATENCY_FAMILIES
        for stat in STATISTICS
        for suffix in ("", "_warm", "_cold")
    ]


LOGGED: frozenset[str] = frozenset((*latency_metric_names(), *_SUMMARY, *_TELEMETRY, *_SHARES))


def is_logged(name: str) -> bool:
    """Whether a run logs a metric of this name (when it has the data for it)."""
    return name in LOGGED


def closest(name: str, among: frozenset[str] = LOGGED) -> str | None:
    """The logged metric a misspelt name most likely meant (`ttft_ms_p5` -> `ttft_ms_p50`)."""
    # A name cut short (p5 for p50) ties with others as close (p95): the one it begins wins.
    extended = sorted((m for m in among if m.startswith(name)), key=len)
    if extended:
        return extended[0]
    found = difflib.get_close_matches(name, sorted(among), n=1, cutoff=0.8)
    return found[0] if found else None


# What a comparison also takes as its objective, beyond the logged metrics: any latency percentile,
# and E2E per output token (analysis/comparison.py computes them from the records).
_COMPARED_PERCENTILE = re.compile(r"(ttfb|ttft|e2e|itl|tpot)_ms_p\d{1,2}|e2e_ms_per_token_p\d{1,2}")


def is_objective(name: str) -> bool:
    """Whether a comparison can decide on `name` (sweep.objective, compare --objective)."""
    return is_logged(name) or _COMPARED_PERCENTILE.fullmatch(name) is not None
