"""Service-level objectives: pure verdicts on a run's metrics and on its requests (see
docs/measurement.md, Metrics).

A run-level target (`slo.<metric>: <limit>`) holds one summary metric to a limit, in the
direction in which that metric is better (metrics.py). Per-request targets (`slo.request.ttft_ms`,
`e2e_ms`, `itl_ms`) judge every measured request; the requests that meet all of them are the
goodput. A failed request meets no target: a user who got an error was not served within any limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sentinel_exp import tags as tag
from sentinel_exp.analysis.metrics import direction
from sentinel_exp.analysis.stats import inter_token_latencies
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord


@dataclass(frozen=True)
class TargetVerdict:
    """One run-level target against the run's value; a metric the run lacks fails its target."""

    metric: str
    limit: float
    direction: Direction
    value: float | None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.direction == Direction.minimize else self.value >= self.limit


def judge_targets(targets: Mapping[str, float], metrics: Mapping[str, float]) -> list[TargetVerdict]:
    """A verdict per run-level target, in the order given; targets without a direction are left
    out (the config check rejects them before a run starts)."""
    verdicts = []
    for metric, limit in targets.items():
        better = direction(metric)
        if better is not None:
            verdicts.append(TargetVerdict(metric, float(limit), better, metrics.get(metric)))
    return verdicts


def target_metrics(verdicts: Sequence[TargetVerdict]) -> dict[str, float]:
    """`slo_<metric>_pass`: 1 or 0 per target."""
    return {f"slo_{v.metric}_pass": 1.0 if v.passed else 0.0 for v in verdicts}


def slo_tags(verdicts: Sequence[TargetVerdict]) -> dict[str, str]:
    """`sentinel.slo`: pass when every run-level target passed; no tag without targets."""
    if not verdicts:
        return {}
    return {tag.SLO: "pass" if all(v.passed for v in verdicts) else "fail"}


def _mean_itl(record: RequestRecord) -> float | None:
    gaps = inter_token_latencies(record)
    # An answer of one token has no gap between tokens to be late: nothing exceeds the limit.
    return sum(gaps) / len(gaps) if gaps else 0.0


# Per-request measures a target may name: the request's value, None when it was not measured.
REQUEST_MEASURES: dict[str, Callable[[RequestRecord], float | None]] = {
    "ttft_ms": lambda r: r.ttft_ms,
    "e2e_ms": lambda r: r.e2e_ms,
    # The request's mean gap between tokens (its decode pace): one slow gap is a stutter that the
    # run-level itl_ms_p99 shows; the per-request target asks whether the answer streamed fast enough.
    "itl_ms": _mean_itl,
}


def meets(record: RequestRecord, limits: Mapping[str, float]) -> bool:
    """Whether a request succeeded and stayed within every per-request limit."""
    if not record.ok:
        return False
    for name, limit in limits.items():
        value = REQUEST_MEASURES[name](record)
        if value is None or value > limit:
            return False
    return True


@dataclass(frozen=True)
class RequestVerdict:
    """How many measured requests met every per-request target, of those that finished."""

    limits: Mapping[str, float]
    met: int
    finished: int
    measured_duration_s: float | None

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.finished:
            out["slo_request_fraction"] = self.met / self.finished
        if self.measured_duration_s and self.measured_duration_s > 0:
            out["goodput_requests_per_s"] = self.met / self.measured_duration_s
        return out


def judge_requests(
    records: Sequence[RequestRecord], limits: Mapping[str, float], measured_duration_s: float | None
) -> RequestVerdict | None:
    """The goodput verdict over the measured phase; None without per-request targets. Cancelled
    requests (stopped by a signal) were never judged by the server's speed and are left out."""
    if not limits:
        return None
    judged = [r for r in records if r.measured and not r.cancelled]
    return RequestVerdict(dict(limits), sum(1 for r in judged if meets(r, limits)), len(judged), measured_duration_s)


@dataclass(frozen=True)
class SloResult:
    """Every verdict of a run: what the console, summary.json and MLflow show."""

    targets: list[TargetVerdict]
    requests: RequestVerdict | None

    @property
    def any(self) -> bool:
        """Whether any target was set."""
        return bool(self.targets) or self.requests is not None

    def metrics(self) -> dict[str, float]:
        """goodput_requests_per_s and slo_request_fraction, then slo_<metric>_pass per target."""
        return {**(self.requests.metrics() if self.requests else {}), **target_metrics(self.targets)}

    def tags(self) -> dict[str, str]:
        return slo_tags(self.targets)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "targets": [
                {"metric": v.metric, "limit": v.limit, "value": v.value, "passed": v.passed} for v in self.targets
            ]
        }
        if self.requests is not None:
            r = self.requests
            out["request"] = {"limits": dict(r.limits), "met": r.met, "finished": r.finished, **r.metrics()}
        return out


def judge(
    targets: Mapping[str, float],
    request_limits: Mapping[str, float],
    metrics: Mapping[str, float],
    records: Sequence[RequestRecord],
    measured_duration_s: float | None,
) -> SloResult:
    """The per-request verdict first, so that a run-level target may name its metrics
    (`slo.goodput_requests_per_s: 5`)."""
    requests = judge_requests(records, request_limits, measured_duration_s)
    all_metrics = {**metrics, **(requests.metrics() if requests else {})}
    return SloResult(judge_targets(targets, all_metrics), requests)
