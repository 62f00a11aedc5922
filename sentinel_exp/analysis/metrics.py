"""The metric catalogue: each metric a run logs, with its label, unit and better direction, in one
place that the SLO checks, the comparison, the console and the reports read (pure).

What each metric measures, and from which clock points, is in docs/measurement.md (Metrics); the
formulas are in stats.py and telemetry/summary.py. Here is how each one is shown and judged.

Two kinds of entries:
- `Latency`: a per-request latency family. `stats.summarize` logs it as `<name>_ms_<stat>`
  (p50, p90, p95, p99, mean, min, max), again over warm and cold requests (`_warm`, `_cold`).
- `Metric`: one logged number, or a family's stem (`output_tokens` for `output_tokens_<stat>`).

A metric's better direction comes from `DIRECTIONS`, by name pattern, for every metric the run
logs (telemetry's included); a metric none matches (a count of samples, a model size, GPU
utilisation) has no better direction, and so no SLO target and no improved/worse verdict.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from sentinel_exp.names import Direction

# Which way each logged metric is better, by name; the first pattern that matches decides.
DIRECTIONS: tuple[tuple[str, Direction], ...] = (
    ("goodput_*", Direction.maximize),
    ("*_tokens_per_s", Direction.maximize),
    ("*requests_per_s", Direction.maximize),
    ("slo_request_fraction", Direction.maximize),
    ("requests_ok", Direction.maximize),
    ("*_ms_*", Direction.minimize),
    ("*_ms", Direction.minimize),
    ("error_rate", Direction.minimize),
    ("cold_starts", Direction.minimize),
    ("requests_failed", Direction.minimize),
    ("requests_cancelled", Direction.minimize),
    ("*cpu_pct*", Direction.minimize),
    ("*energy*", Direction.minimize),
    ("*power_w*", Direction.minimize),
    ("*rss_mb*", Direction.minimize),
    ("*mem*_mb*", Direction.minimize),
)


def direction(metric: str) -> Direction | None:
    """Whether lower (minimize) or higher (maximize) values of `metric` are better; None if unknown."""
    for pattern, better in DIRECTIONS:
        if fnmatch.fnmatchcase(metric, pattern):
            return better
    return None


@dataclass(frozen=True)
class Latency:
    """A per-request latency family, in milliseconds, lower better."""

    name: str  # the stem: `ttft` for ttft_ms_p50
    label: str  # in tables: `TTFT`
    axis: str  # on a figure's axis, where there is room: `E2E latency`
    in_summary: bool = True  # a row of the run's summary table (console and report.md)
    unit: str = "ms"

    def metric(self, stat: str) -> str:
        """The logged name of one statistic: `ttft_ms_p50`."""
        return f"{self.name}_ms_{stat}"


# In the order of the run's summary table.
LATENCIES: tuple[Latency, ...] = (
    Latency("ttfb", "TTFB", "TTFB"),
    Latency("ttft", "TTFT", "TTFT"),
    Latency("itl", "ITL", "inter-token latency"),
    Latency("tpot", "TPOT", "time per output token"),
    Latency("e2e", "E2E", "E2E latency"),
    Latency("server_load", "server load", "server load"),
    Latency("server_prefill", "server prefill", "server prefill"),
    Latency("server_decode", "server decode", "server decode"),
    Latency("server_queue", "server queue", "server queue"),
    Latency("queue", "client queue", "client queue"),
    Latency("client_overhead", "E2E − server total", "E2E − server total"),
    Latency("ttft_other", "TTFT − load − prefill", "TTFT − load − prefill", in_summary=False),
)
LATENCY = {latency.name: latency for latency in LATENCIES}


@dataclass(frozen=True)
class Metric:
    """One logged metric (or a family's stem) as it is shown."""

    name: str
    label: str
    unit: str
    short: str | None = None  # a narrow column's header (the sweep table); else the label
    # The logged value times `scale` is in `unit`: error_rate is logged as a fraction, shown in %.
    scale: float = 1.0

    @property
    def direction(self) -> Direction | None:
        return direction(self.name)

    @property
    def header(self) -> str:
        return self.short or self.label


# The summary table says "tok" where the comparison says "tokens": both as the console prints them.
OUTPUT_TOKENS = Metric("output_tokens", "output tokens", "tok")  # output_tokens_<stat>, per request
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        OUTPUT_TOKENS,
        Metric("output_tokens_p50", "output tokens per request (median)", "tokens"),
        Metric("output_tokens_per_s", "decode tok/s per request (median)", "tok/s", short="tok/s"),
        Metric("prefill_tokens_per_s", "prefill rate", "tok/s"),
        Metric("throughput_tokens_per_s", "throughput", "tok/s"),
        Metric("cold_starts", "cold starts", "requests", short="cold"),
        Metric("requests_failed", "failed requests", "requests", short="failed"),
        Metric("error_rate", "error rate", "%", scale=100.0),
        Metric("cpu_pct_mean", "CPU, machine (mean)", "%"),
        Metric("server_cpu_pct_mean", "CPU, server (mean)", "% of a core"),
        Metric("gpu_util_pct_mean", "GPU utilisation (mean)", "%"),
        Metric("energy_j_per_token", "GPU energy per token", "J/token"),
    )
}

_LATENCY_STAT = re.compile(r"([a-z0-9_]+?)_ms_(p\d{1,2}|mean|min|max)")
_PER_TOKEN = re.compile(r"e2e_ms_per_token_(p\d{1,2})")


def describe(metric: str) -> Metric:
    """The label and unit of any logged metric name: a catalogued one, a latency statistic
    (`ttft_ms_p99` is `TTFT p99`, ms), E2E per output token (`e2e_ms_per_token_p50`, which the
    comparison computes when the arms' answers differ in length), else the bare name."""
    if metric in METRICS:
        return METRICS[metric]
    if (match := _LATENCY_STAT.fullmatch(metric)) and match.group(1) in LATENCY:
        latency = LATENCY[match.group(1)]
        return Metric(metric, f"{latency.label} {match.group(2)}", latency.unit)
    if match := _PER_TOKEN.fullmatch(metric):
        return Metric(metric, f"E2E per output token {match.group(1)}", "ms/token")
    return Metric(metric, metric, "")


def axis_label(latency: str) -> str:
    """A latency family's name on a figure (its stem when it is not catalogued)."""
    return LATENCY[latency].axis if latency in LATENCY else latency
