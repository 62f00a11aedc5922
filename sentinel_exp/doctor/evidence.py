"""What the baseline says (pure): the facts of its configuration and machine, and what its records
show, gathered into the one `Evidence` the hypotheses are drawn from."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel_exp.analysis.diagnosis import Breakdown, PartName, diagnose
from sentinel_exp.analysis.stats import output_tokens, successful
from sentinel_exp.records import RequestRecord
from sentinel_exp.telemetry.summary import free_cores


@dataclass(frozen=True)
class Facts:
    """The baseline's configuration and machine as plain values (steps.py reads them from its
    config, its run.json tags and this machine)."""

    server_kind: str  # as resolved: ollama, embedded, simulated or openai
    local: bool  # the server runs on this machine: its cores and GPUs are this machine's
    options: Mapping[str, Any]  # the options the requests send
    keep_alive_s: float  # how long the server keeps the model after a request (inf: forever)
    idle_gap_s: float  # the workload's longest idle gap between requests (0: none)
    concurrency: int
    rate: float | None  # requests/s of an open loop; None: closed loop
    requests: int  # workload.requests
    input_tokens: Any = None  # workload.input_tokens as configured (None: the prompts as given)
    slots: int | None = None  # the server's generation slots: 0 unlimited, None unknown
    physical_cores: int | None = None  # of the server's machine; None: unknown (another host)
    logical_cpus: int | None = None
    gpu_count: int | None = None  # GPUs of the server's machine; None: cannot tell
    expect_gpu: bool | None = None  # hardware.expect_gpu
    lint: Mapping[str, str] = field(default_factory=dict)  # option lint: rule -> finding
    threads: int | None = None  # a llama.cpp server's compute threads; None: not one, or unknown
    contended: bool = False  # the baseline warned of other processes' CPU

    @property
    def runner_options(self) -> bool:
        """Whether the server honours runner options (num_ctx, num_thread, num_gpu): llama.cpp does,
        the simulated server models none, and an OpenAI-compatible API cannot carry them."""
        return self.server_kind in ("ollama", "embedded")


@dataclass(frozen=True)
class Evidence:
    """The baseline's facts, its verdict and what its successful measured requests show."""

    facts: Facts
    ttft: Breakdown | None  # None: nothing succeeded
    e2e: Breakdown | None
    metrics: Mapping[str, float]
    ok: int  # successful measured requests
    cold: int  # of those, cold starts
    prompt_tokens: float | None  # mean prompt length as the server counted it; None: not counted
    longest_prompt: int | None
    output_tokens: float | None  # median answer length
    longest_output: int | None
    server_durations: bool  # the server reports load, prefill and decode (Ollama API)

    def share(self, latency: str, part: PartName) -> float:
        """The part's share of the mean TTFT or E2E (0 when the run has no such part)."""
        breakdown = self.ttft if latency == "ttft" else self.e2e
        if breakdown is None:
            return 0.0
        return next((p.share for p in breakdown.parts if p.name == part), 0.0)

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.metrics.get("output_tokens_per_s")

    @property
    def busy_cores(self) -> float | None:
        """Cores other processes kept busy on average while measuring (None: no telemetry)."""
        other = self.metrics.get("other_cpu_pct_mean")
        return None if other is None else other / 100.0

    @property
    def free_cores(self) -> int | None:
        """Cores left to the server, as the contention warning counts them: every one where other
        processes took little (a tenth of a core on 2 cores leaves both), else the whole cores
        they leave, at least one."""
        cpus = self.facts.logical_cpus
        if cpus is None:
            return None
        return free_cores(self.metrics.get("other_cpu_pct_mean"), cpus)

    @property
    def gpu_fraction(self) -> float | None:
        return self.metrics.get("gpu_offload_fraction")


def gather(records: Sequence[RequestRecord], metrics: Mapping[str, float], facts: Facts) -> Evidence:
    """The evidence of the baseline's records and summary metrics."""
    verdict = diagnose(records, metrics)
    by_latency = {b.latency: b for b in verdict.breakdowns}
    ok = successful(records)
    prompts = [r.prompt_eval_count for r in ok if r.prompt_eval_count is not None]
    answers = [output_tokens(r) for r in ok]
    return Evidence(
        facts=facts,
        ttft=by_latency.get("ttft"),
        e2e=by_latency.get("e2e"),
        metrics=metrics,
        ok=len(ok),
        cold=sum(1 for r in ok if r.cold),
        prompt_tokens=statistics.fmean(prompts) if prompts else None,
        longest_prompt=max(prompts) if prompts else None,
        output_tokens=float(statistics.median(answers)) if answers else None,
        longest_output=max(answers) if answers else None,
        server_durations=bool(ok) and not verdict.unknown,
    )
