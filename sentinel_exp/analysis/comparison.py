"""Which change helps? A baseline arm against a candidate arm, per metric, with a verdict that
survives noise: pure statistics, no I/O. Metric names are those of docs/measurement.md; the
design and the rules are in docs/statistics.md.

Each metric's value is the arm's pooled statistic (TTFT p50 over all its successful measured
requests); its change is against the baseline. The interval covers the noise where it lives:
between the rounds of an interleaved study when both arms were measured in the same rounds
(paired), between runs otherwise (inference.py: grouped jackknife, Student's t with clusters - 1
degrees of freedom). With one run per arm and no rounds to pair, the noise between runs is
unknown and no row gets a significance verdict. The error rate compares as pooled proportions
(Newcombe's hybrid score interval). The objective is the one decisive (primary) row; every other
row must pass Holm-Bonferroni, so two identical configurations rarely show a spurious "improved"
anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from sentinel_exp.analysis.inference import Clustered, LogRatio, independent_log_ratio, paired_log_ratio
from sentinel_exp.analysis.stats import inter_token_latencies, output_tokens, successful, time_per_output_token
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
DEFAULT_MIN_EFFECT_PCT = 2.0  # config: compare.min_effect_pct
MIN_REQUESTS = 20  # fewer successful requests on a side: no CI, verdict "too few requests"
OUTPUT_LENGTH_TOLERANCE = 0.10  # median output tokens differing more: E2E is compared per output token
DEFAULT_OBJECTIVE = "ttft_ms_p50"
FEW_CLUSTERS = 5  # below this many rounds or runs, a note says the interval is wide


class Verdict(StrEnum):
    """What a row says: improved/worse only when the change is significant (primary row: its CI
    excludes 0; secondary rows: Holm-adjusted p < alpha) and larger than the minimum effect; the
    objective is "equivalent" when its whole CI lies within the minimum effect."""

    IMPROVED = "improved"
    WORSE = "worse"
    DIFFERS = "differs"  # significant, for a metric with no better direction (output length)
    EQUIVALENT = "equivalent"  # the objective's CI lies within +-min effect: no change larger than that
    NO_CHANGE = "no significant change"
    TOO_FEW = "too few requests"
    NO_CI = "no verdict (one run per arm)"
    BASELINE_ZERO = "n/a (baseline is 0)"


SIGNIFICANT = frozenset({Verdict.IMPROVED, Verdict.WORSE, Verdict.DIFFERS})


class Design(StrEnum):
    """How the two arms were measured, which decides the unit the interval is built on."""

    PAIRED = "paired rounds"  # one interleaved study: both arms in the same rounds
    INDEPENDENT = "independent runs"  # runs measured apart, two or more per arm
    SINGLE = "one run per arm"  # no unit to estimate the noise between runs with


@dataclass(frozen=True)
class RunResult:
    """One run of a configuration: its request records (all phases; only successful measured
    ones become latency samples) and its flat summary metrics as MLflow stores them."""

    records: Sequence[RequestRecord]
    metrics: Mapping[str, float] = field(default_factory=dict)
    # The interleaved study the run was measured in (its rounds are the records' `block`): two
    # runs of one study are paired by round. None: measured on its own.
    study: str | None = None

    def rounds(self) -> set[int]:
        return {r.block for r in self.records if r.measured and r.block is not None}


@dataclass(frozen=True)
class Arm:
    """A configuration, e.g. name "options=low_ctx", with one run per repeat."""

    name: str
    runs: Sequence[RunResult]


@dataclass(frozen=True)
class MetricComparison:
    """One metric, baseline against candidate. `ci_low`/`ci_high` are the unadjusted 95% interval;
    multiplicity enters only through `p_adjusted` and the verdict."""

    metric: str  # the MLflow metric name where one exists (ttft_ms_p50, throughput_tokens_per_s, ...)
    label: str
    unit: str
    baseline: float
    candidate: float
    change_pct: float | None  # None when the baseline is 0; in percentage points when change_unit is "pp"
    ci_low: float | None  # 95% CI of the change, same unit as change_pct; None without a CI
    ci_high: float | None
    p_value: float | None  # two-sided, unadjusted
    p_adjusted: float | None  # Holm-adjusted for secondary rows; the raw p for the primary row
    verdict: Verdict
    primary: bool
    direction: Direction | None  # minimize: lower is better; None: no better direction
    change_unit: str = "%"  # "%": relative change; "pp": difference in percentage points (error rate)
    n_baseline: int = 0  # samples behind each side: requests, or runs for run-level metrics
    n_candidate: int = 0
    mde_pct: float | None = None  # the smallest change this design finds with 80% power (same unit)


@dataclass(frozen=True)
class Comparison:
    """All rows of one candidate against the baseline, the objective's (primary) row first."""

    baseline: str
    candidate: str
    objective: str
    rows: tuple[MetricComparison, ...]
    notes: tuple[str, ...]
    method: str
    design: Design = Design.SINGLE
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT
    clusters: int = 1  # rounds (paired) or the smaller arm's runs: the units the CI is built on
    confidence: float = CONFIDENCE  # the level of every row's interval (lower at a sequential look)

    def row(self, metric: str) -> MetricComparison | None:
        return next((r for r in self.rows if r.metric == metric), None)

    @property
    def primary(self) -> MetricComparison | None:
        return next((r for r in self.rows if r.primary), None)


# --- the metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RequestMetric:
    metric: str
    label: str
    unit: str
    direction: Direction | None
    quantity: str  # key into _ArmSamples.values, or "itl"
    q: float  # percentile


_LOWER, _HIGHER = Direction.minimize, Direction.maximize

_LATENCY_METRICS = (
    _RequestMetric("ttft_ms_p50", "TTFT p50", "ms", _LOWER, "ttft", 50),
    _RequestMetric("ttft_ms_p95", "TTFT p95", "ms", _LOWER, "ttft", 95),
    _RequestMetric("ttfb_ms_p50", "TTFB p50", "ms", _LOWER, "ttfb", 50),
    _RequestMetric("ttfb_ms_p95", "TTFB p95", "ms", _LOWER, "ttfb", 95),
)
_E2E_METRICS = (
    _RequestMetric("e2e_ms_p50", "E2E p50", "ms", _LOWER, "e2e", 50),
    _RequestMetric("e2e_ms_p95", "E2E p95", "ms", _LOWER, "e2e", 95),
)
_E2E_PER_TOKEN_METRICS = (
    _RequestMetric("e2e_ms_per_token_p50", "E2E per output token p50", "ms/token", _LOWER, "e2e_per_token", 50),
    _RequestMetric("e2e_ms_per_token_p95", "E2E per output token p95", "ms/token", _LOWER, "e2e_per_token", 95),
)
_DECODE_METRICS = (
    _RequestMetric("itl_ms_p50", "ITL p50", "ms", _LOWER, "itl", 50),
    # Named as stats.summarize stores it: median over requests of 1000 / TPOT.
    _RequestMetric("output_tokens_per_s", "decode tok/s per request (median)", "tok/s", _HIGHER, "decode_rate", 50),
)
_OUTPUT_TOKENS = _RequestMetric(
    "output_tokens_p50", "output tokens per request (median)", "tokens", None, "output_tokens", 50
)
_LATENCY_PERCENTILE = re.compile(r"(ttfb|ttft|e2e|itl|tpot)_ms_p(\d{1,2})")
_PER_TOKEN_PERCENTILE = re.compile(r"e2e_ms_per_token_p(\d{1,2})")
_QUANTITY_LABELS = {"ttfb": "TTFB", "ttft": "TTFT", "e2e": "E2E", "itl": "ITL", "tpot": "TPOT"}


def _objective_metric(objective: str) -> _RequestMetric | None:
    """A latency percentile the fixed rows lack (sweep.objective=ttft_ms_p99, tpot_ms_p50): its
    own row, so the decisive metric is always tested."""
    if match := _LATENCY_PERCENTILE.fullmatch(objective):
        quantity, q = match.group(1), int(match.group(2))
        return _RequestMetric(objective, f"{_QUANTITY_LABELS[quantity]} p{q}", "ms", _LOWER, quantity, q)
    if match := _PER_TOKEN_PERCENTILE.fullmatch(objective):
        q = int(match.group(1))
        return _RequestMetric(objective, f"E2E per output token p{q}", "ms/token", _LOWER, "e2e_per_token", q)
    return None


@dataclass(frozen=True)
class _RunMetric:
    metric: str
    label: str
    unit: str
    direction: Direction | None


_RUN_METRICS = (
    _RunMetric("throughput_tokens_per_s", "throughput", "tok/s", _HIGHER),
    _RunMetric("cold_starts", "cold starts", "requests", _LOWER),
    _RunMetric("cpu_pct_mean", "CPU, machine (mean)", "%", _LOWER),
    _RunMetric("server_cpu_pct_mean", "CPU, server (mean)", "% of a core", _LOWER),
    # Busier GPUs may mean better use or more work: no better direction.
    _RunMetric("gpu_util_pct_mean", "GPU utilisation (mean)", "%", None),
    _RunMetric("energy_j_per_token", "GPU energy per token", "J/token", _LOWER),
)

ERROR_RATE = "error_rate"


# --- per-arm samples, grouped into clusters ------------------------------------------------------


_QUANTITIES = ("ttfb", "ttft", "e2e", "e2e_per_token", "tpot", "decode_rate", "output_tokens")


@dataclass(frozen=True)
class _ArmSamples:
    """The arm's successful measured requests, one value per request per quantity (NaN where a
    request has none), each request's cluster, and the ITL gaps with their request."""

    values: dict[str, NDArray[np.float64]]
    clusters: NDArray[np.int64]
    gaps: NDArray[np.float64]
    gap_request: NDArray[np.int64]
    finished: int  # measured requests that ended ok or failed (not cancelled)
    failed: int

    def count(self, quantity: str) -> int:
        if quantity == "itl":
            return int(np.unique(self.gap_request).size)
        return int(np.count_nonzero(~np.isnan(self.values[quantity])))

    def clustered(self, quantity: str) -> Clustered:
        if quantity == "itl":
            return Clustered(self.gaps, self.clusters[self.gap_request])
        values = self.values[quantity]
        keep = ~np.isnan(values)
        return Clustered(values[keep], self.clusters[keep])


def _optional(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _samples(arm: Arm, by_round: bool) -> _ArmSamples:
    """`by_round`: each request's cluster is its round (the records' block); else its run."""
    columns: dict[str, list[float]] = {k: [] for k in _QUANTITIES}
    clusters: list[int] = []
    gaps: list[float] = []
    gap_request: list[int] = []
    finished = failed = 0
    for run_index, run in enumerate(arm.runs):
        for r in run.records:
            if r.measured and not r.cancelled:
                finished += 1
                failed += not r.ok
        for r in successful(run.records):
            request = len(clusters)
            clusters.append(int(r.block) if by_round and r.block is not None else run_index)
            tokens = output_tokens(r)
            tpot = time_per_output_token(r)
            columns["ttfb"].append(_optional(r.ttfb_ms))
            columns["ttft"].append(_optional(r.ttft_ms))
            columns["e2e"].append(_optional(r.e2e_ms))
            columns["e2e_per_token"].append(r.e2e_ms / tokens if r.e2e_ms is not None and tokens > 0 else math.nan)
            columns["tpot"].append(_optional(tpot))
            columns["decode_rate"].append(1000.0 / tpot if tpot is not None and tpot > 0 else math.nan)
            columns["output_tokens"].append(float(tokens))
            request_gaps = inter_token_latencies(r)
            gaps.extend(request_gaps)
            gap_request.extend([request] * len(request_gaps))
    return _ArmSamples(
        values={k: np.asarray(v, dtype=np.float64) for k, v in columns.items()},
        clusters=np.asarray(clusters, dtype=np.int64),
        gaps=np.asarray(gaps, dtype=np.float64),
        gap_request=np.asarray(gap_request, dtype=np.int64),
        finished=finished,
        failed=failed,
    )


def design_of(baseline: Arm, candidate: Arm) -> Design:
    """Paired when both arms are one run each of the same interleaved study, measured in at least
    two common rounds; independent when each arm has two runs or more; otherwise a single run per
    arm, whose noise between runs nothing here can tell."""
    if len(baseline.runs) == 1 and len(candidate.runs) == 1:
        b, c = baseline.runs[0], candidate.runs[0]
        if b.study is not None and b.study == c.study and len(b.rounds() & c.rounds()) >= 2:
            return Design.PAIRED
        return Design.SINGLE
    if len(baseline.runs) >= 2 and len(candidate.runs) >= 2:
        return Design.INDEPENDENT
    return Design.SINGLE


def _percentile(q: float) -> Callable[[NDArray[np.float64]], float]:
    def statistic(values: NDArray[np.float64]) -> float:
        return float(np.percentile(values, q)) if values.size else math.nan

    return statistic


def _interval(design: Design, base: Clustered, cand: Clustered, q: float) -> LogRatio | None:
    if design is Design.PAIRED:
        return paired_log_ratio(base, cand, _percentile(q))
    if design is Design.INDEPENDENT:
        return independent_log_ratio(base, cand, _percentile(q))
    return None


def _point(samples: _ArmSamples, m: _RequestMetric) -> float:
    values = samples.gaps if m.quantity == "itl" else samples.values[m.quantity]
    values = values[~np.isnan(values)]
    return float(np.percentile(values, m.q)) if values.size else math.nan


# --- inference ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    change: float | None
    interval: LogRatio | None = None
    # Newcombe's interval of the error rate, in percentage points, with its p (no RatioInterval).
    fixed_ci: tuple[float, float] | None = None
    fixed_p: float | None = None

    def ci(self, alpha: float) -> tuple[float, float] | None:
        if self.interval is not None:
            return self.interval.bounds(alpha)
        return self.fixed_ci

    @property
    def p(self) -> float | None:
        return self.interval.p_value() if self.interval is not None else self.fixed_p


def _ratio_estimate(base: float, cand: float, interval: LogRatio | None) -> _Estimate:
    """The change in % against the baseline: over the clusters where there are clusters (the
    geometric mean of their ratios), else of the pooled values."""
    if interval is not None:
        return _Estimate(interval.change_pct, interval)
    if base == 0:
        return _Estimate(0.0 if cand == 0 else None)
    return _Estimate(100.0 * (cand - base) / base)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _newcombe(x_base: int, n_base: int, x_cand: int, n_cand: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for p_cand − p_base, from Wilson intervals."""
    p_b, p_c = x_base / n_base, x_cand / n_cand
    l_b, u_b = _wilson(x_base, n_base, z)
    l_c, u_c = _wilson(x_cand, n_cand, z)
    d = p_c - p_b
    return d - math.hypot(p_c - l_c, u_b - p_b), d + math.hypot(u_c - p_c, p_b - l_b)


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF, by bisection on erfc (no scipy needed for one number)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _error_rate_estimate(base: _ArmSamples, cand: _ArmSamples, alpha: float) -> _Estimate:
    x_b, n_b, x_c, n_c = base.failed, base.finished, cand.failed, cand.finished
    change = 100.0 * (x_c / n_c - x_b / n_b)
    low, high = _newcombe(x_b, n_b, x_c, n_c, _normal_quantile(1 - alpha / 2))
    if change == 0:
        p = 1.0
    else:
        # The p-value inverts the same interval: the level at which its bound touches 0.
        def bound(z: float) -> float:
            interval = _newcombe(x_b, n_b, x_c, n_c, z)
            return interval[0] if change > 0 else -interval[1]

        z_lo, z_hi = 0.0, 50.0
        for _ in range(100):
            mid = (z_lo + z_hi) / 2
            if bound(mid) > 0:
                z_lo = mid
            else:
                z_hi = mid
        p = math.erfc(z_lo / math.sqrt(2))
    return _Estimate(change, fixed_ci=(100.0 * low, 100.0 * high), fixed_p=p)


def _holm(p_values: Sequence[float]) -> list[float]:
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --- the comparison -----------------------------------------------------------------------------


@dataclass
class _Row:
    """A row before multiplicity and verdicts are settled."""

    metric: str
    label: str
    unit: str
    direction: Direction | None
    baseline: float
    candidate: float
    estimate: _Estimate
    n_baseline: int
    n_candidate: int
    change_unit: str = "%"
    blocked: Verdict | None = None  # a verdict decided before any test: too few, no CI, baseline 0


def _run_values(arm: Arm, metric: str) -> Clustered:
    pairs = [(run.metrics[metric], i) for i, run in enumerate(arm.runs) if metric in run.metrics]
    pairs = [(v, i) for v, i in pairs if math.isfinite(v)]
    return Clustered(
        np.asarray([v for v, _ in pairs], dtype=np.float64), np.asarray([i for _, i in pairs], dtype=np.int64)
    )


def _mean(values: NDArray[np.float64]) -> float:
    return float(values.mean()) if values.size else math.nan


def compare(
    baseline: Arm,
    candidate: Arm,
    *,
    objective: str = DEFAULT_OBJECTIVE,
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT,
    alpha: float = ALPHA,
    per_token: bool = True,
) -> Comparison:
    """Every metric both arms have, baseline against candidate. `objective` (sweep.objective)
    names the primary row; a change counts only when its CI excludes 0 (secondary rows: when the
    Holm-adjusted p < alpha) and it exceeds `min_effect_pct` of the baseline
    (compare.min_effect_pct). `alpha` is below 0.05 only at a look of a sequential study, or for
    one of several candidates that share it. `per_token` False keeps E2E whole where the answers'
    lengths differ: for a candidate that shortens the answers on purpose (num_predict)."""
    if not baseline.runs or not candidate.runs:
        raise ValueError("each arm needs at least one run")
    design = design_of(baseline, candidate)
    by_round = design is Design.PAIRED
    base, cand = _samples(baseline, by_round), _samples(candidate, by_round)
    notes: list[str] = []

    lengths_differ = per_token and _output_lengths_differ(base, cand, notes)
    if lengths_differ and objective in {m.metric for m in _E2E_METRICS}:
        replacement = objective.replace("e2e_ms_", "e2e_ms_per_token_")
        notes.append(f"objective {objective} is compared as {replacement}")
        objective = replacement
    rows = _request_rows(base, cand, objective, lengths_differ, design)
    if base.finished and cand.finished:
        rows.append(_error_rate_row(base, cand, alpha))
    rows += _run_rows(baseline, candidate, notes)

    if not any(r.metric == objective for r in rows):
        notes.append(f"objective {objective} is not among the compared metrics: every row is secondary")
    clusters = _clusters(design, baseline, candidate)
    notes += _design_notes(design, clusters)
    return Comparison(
        baseline=baseline.name,
        candidate=candidate.name,
        objective=objective,
        rows=_settle(rows, objective, min_effect_pct, alpha),
        notes=tuple(notes),
        method=_method(design, clusters, min_effect_pct, alpha),
        design=design,
        min_effect_pct=min_effect_pct,
        clusters=clusters,
        confidence=1.0 - alpha,
    )


def _clusters(design: Design, baseline: Arm, candidate: Arm) -> int:
    if design is Design.PAIRED:
        return len(baseline.runs[0].rounds() & candidate.runs[0].rounds())
    if design is Design.INDEPENDENT:
        return min(len(baseline.runs), len(candidate.runs))
    return 1


def _design_notes(design: Design, clusters: int) -> list[str]:
    if design is Design.SINGLE:
        return [
            "one run per arm: the noise between runs is unknown, so no row gets a significance verdict; "
            "measure the arms in one interleaved study (a sweep's default) or repeat each run"
        ]
    if clusters < FEW_CLUSTERS:
        unit = "rounds" if design is Design.PAIRED else "runs per arm"
        return [f"only {clusters} {unit}: the intervals are wide; more give a sharper verdict"]
    return []


def _output_lengths_differ(base: _ArmSamples, cand: _ArmSamples, notes: list[str]) -> bool:
    """Whether the arms' median answers differ in length beyond OUTPUT_LENGTH_TOLERANCE: then E2E
    is compared per output token, and a note says so."""
    out_b, out_c = _point(base, _OUTPUT_TOKENS), _point(cand, _OUTPUT_TOKENS)
    differ = out_b > 0 and math.isfinite(out_c) and abs(out_c - out_b) / out_b > OUTPUT_LENGTH_TOLERANCE
    if differ:
        notes.append(
            f"median output tokens per request differ by {100 * (out_c - out_b) / out_b:+.0f}% "
            f"({out_b:g} vs {out_c:g}): E2E is compared per output token (e2e_ms / output tokens), "
            f"since a longer answer is not a slower server; a longer one also spreads its TTFT over more "
            f"tokens, so TTFT and the decode rate say more of the server's own speed"
        )
    return differ


def _request_rows(
    base: _ArmSamples, cand: _ArmSamples, objective: str, lengths_differ: bool, design: Design
) -> list[_Row]:
    """Rows of the per-request metrics both arms have (the objective's first when it is one of
    them and not a standard row), each with its interval over the design's clusters."""
    request_metrics = [
        *_LATENCY_METRICS,
        *(_E2E_PER_TOKEN_METRICS if lengths_differ else _E2E_METRICS),
        *_DECODE_METRICS,
        _OUTPUT_TOKENS,
    ]
    extra = _objective_metric(objective)
    if extra is not None and extra.metric not in {m.metric for m in request_metrics}:
        request_metrics.insert(0, extra)
    rows: list[_Row] = []
    for m in request_metrics:
        n_b, n_c = base.count(m.quantity), cand.count(m.quantity)
        if not (n_b and n_c):
            continue
        b, c = _point(base, m), _point(cand, m)
        too_few = min(n_b, n_c) < MIN_REQUESTS
        interval = None if too_few else _interval(design, base.clustered(m.quantity), cand.clustered(m.quantity), m.q)
        blocked = Verdict.TOO_FEW if too_few else (Verdict.NO_CI if interval is None else None)
        estimate = _ratio_estimate(b, c, interval)
        rows.append(_Row(m.metric, m.label, m.unit, m.direction, b, c, estimate, n_b, n_c, blocked=blocked))
    return rows


def _error_rate_row(base: _ArmSamples, cand: _ArmSamples, alpha: float) -> _Row:
    """Failed over finished requests, pooled over runs; its change is in percentage points."""
    return _Row(
        ERROR_RATE,
        "error rate",
        "%",
        _LOWER,
        100.0 * base.failed / base.finished,
        100.0 * cand.failed / cand.finished,
        _error_rate_estimate(base, cand, alpha),
        base.finished,
        cand.finished,
        change_unit="pp",
        blocked=Verdict.TOO_FEW if min(base.finished, cand.finished) < MIN_REQUESTS else None,
    )


def _run_rows(baseline: Arm, candidate: Arm, notes: list[str]) -> list[_Row]:
    """Rows of the run-level metrics (one value a run), with their interval over runs: none below
    two runs on a side."""
    rows: list[_Row] = []
    for rm in _RUN_METRICS:
        v_b, v_c = _run_values(baseline, rm.metric), _run_values(candidate, rm.metric)
        if not v_b.values.size or not v_c.values.size:
            if v_b.values.size or v_c.values.size:
                notes.append(f"{rm.metric} is in one arm only: not compared")
            continue
        b, c = _mean(v_b.values), _mean(v_c.values)
        interval = independent_log_ratio(v_b, v_c, _mean)
        n_b, n_c = int(v_b.values.size), int(v_c.values.size)
        blocked = None if interval is not None else Verdict.NO_CI
        estimate = _ratio_estimate(b, c, interval)
        rows.append(_Row(rm.metric, rm.label, rm.unit, rm.direction, b, c, estimate, n_b, n_c, blocked=blocked))
    return rows


def _method(design: Design, clusters: int, min_effect_pct: float, alpha: float) -> str:
    level = f"{100 * (1 - alpha):.3g}%"
    if design is Design.PAIRED:
        unit = (
            f"paired by round: each metric taken in each of {clusters} rounds, the arms' ratio per round, "
            f"{level} t interval over the rounds' log ratios ({clusters - 1} df)"
        )
    elif design is Design.INDEPENDENT:
        unit = (
            f"independent runs: each metric taken per run, {level} Welch t interval over the arms' log values "
            f"({clusters}+ runs per arm)"
        )
    else:
        unit = "one run per arm: no unit to estimate the noise between runs with, so no significance verdict"
    return (
        f"{unit}; requests inside a round or run are one sample of it, not independent draws; "
        f"error rate: Newcombe hybrid score interval, pooled; secondary rows significant only when "
        f"Holm-adjusted p < {alpha:.2g}; min effect {min_effect_pct:g}%"
    )


def compare_many(
    baseline: Arm,
    candidates: Sequence[Arm],
    *,
    objective: str = DEFAULT_OBJECTIVE,
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Each candidate against the one baseline (no adjustment across candidates)."""
    return [compare(baseline, c, objective=objective, min_effect_pct=min_effect_pct, alpha=alpha) for c in candidates]


def _settle(rows: Sequence[_Row], objective: str, min_effect_pct: float, alpha: float) -> tuple[MetricComparison, ...]:
    tested = [i for i, r in enumerate(rows) if r.blocked is None and r.estimate.p is not None]
    secondary = [i for i in tested if rows[i].metric != objective]
    adjusted: dict[int, float] = dict(zip(secondary, _holm([_p(rows[i]) for i in secondary]), strict=True))

    out: list[MetricComparison] = []
    for i, r in enumerate(rows):
        primary = r.metric == objective
        est = r.estimate
        ci = est.ci(alpha) if r.blocked is None else None
        p_adj = _p(r) if primary and i in tested else adjusted.get(i)
        out.append(
            MetricComparison(
                metric=r.metric,
                label=r.label,
                unit=r.unit,
                baseline=r.baseline,
                candidate=r.candidate,
                change_pct=est.change,
                ci_low=ci[0] if ci else None,
                ci_high=ci[1] if ci else None,
                p_value=est.p if r.blocked is None else None,
                p_adjusted=p_adj,
                verdict=_verdict(r, ci, primary, p_adj, min_effect_pct, alpha),
                primary=primary,
                direction=r.direction,
                change_unit=r.change_unit,
                n_baseline=r.n_baseline,
                n_candidate=r.n_candidate,
                mde_pct=_mde(r, alpha),
            )
        )
    out.sort(key=lambda row: not row.primary)  # the decisive row first; the rest keep their order
    return tuple(out)


def _mde(row: _Row, alpha: float) -> float | None:
    interval = row.estimate.interval
    return None if row.blocked is not None or interval is None else interval.minimum_detectable_pct(alpha)


def _p(row: _Row) -> float:
    assert row.estimate.p is not None
    return row.estimate.p


def _verdict(
    row: _Row,
    ci: tuple[float, float] | None,
    primary: bool,
    p_adjusted: float | None,
    min_effect_pct: float,
    alpha: float,
) -> Verdict:
    est = row.estimate
    if row.blocked is not None:
        return row.blocked
    if est.change is None:
        return Verdict.BASELINE_ZERO
    if ci is None or p_adjusted is None:
        return Verdict.NO_CHANGE if est.change == 0 else Verdict.NO_CI
    excludes_zero = ci[0] > 0 or ci[1] < 0
    significant = excludes_zero if primary else p_adjusted < alpha
    # A % row's change must exceed min_effect_pct as shown: the estimate its CI is built around
    # (per round or per run), not the pooled values, which can differ from it. A pp row's move
    # must exceed min_effect_pct of the baseline value, so an error rate rising from 0 counts
    # once it is significant.
    if row.change_unit == "%":
        # (a change exactly at the minimum does not count, give or take the log and exp's rounding)
        large_enough = abs(est.change) > min_effect_pct + 1e-9
    else:
        large_enough = abs(row.candidate - row.baseline) > min_effect_pct / 100.0 * abs(row.baseline)
    if not (significant and large_enough):
        within = row.change_unit == "%" and -min_effect_pct <= ci[0] and ci[1] <= min_effect_pct
        return Verdict.EQUIVALENT if primary and within else Verdict.NO_CHANGE
    if row.direction is None:
        return Verdict.DIFFERS
    lower = est.change < 0  # the direction the CI was tested in
    return Verdict.IMPROVED if lower == (row.direction == Direction.minimize) else Verdict.WORSE


# --- rendering ----------------------------------------------------------------------------------


def _number(value: float) -> str:
    """Three significant digits, whole numbers from 1000 up: 0.0123, 9.99, 40.2, 329, 1,234. From
    999.5, three significant digits round to 1000, which `.3g` would write as 1e+03."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 999.5:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _signed(value: float, unit: str) -> str:
    suffix = " pp" if unit == "pp" else "%"
    return f"{value:+.1f}{suffix}"


def _ci(row: MetricComparison) -> str:
    if row.ci_low is None or row.ci_high is None:
        return "—"
    return f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]"


def verdict_text(row: MetricComparison, min_effect_pct: float) -> str:
    """The verdict in words: an equivalence says how small a change it rules out."""
    if row.verdict is Verdict.EQUIVALENT:
        return f"no change larger than {min_effect_pct:g}%"
    return str(row.verdict)


def _verdict_cell(row: MetricComparison, min_effect_pct: float) -> str:
    text = verdict_text(row, min_effect_pct)
    if row.p_adjusted is None:
        return text
    kind = "p" if row.primary else "Holm p"
    return f"{text} ({kind} {row.p_adjusted:.2g})"


def ci_header(comparison: Comparison) -> str:
    return f"{100 * comparison.confidence:.3g}% CI"


def design_line(comparison: Comparison) -> str:
    """What the CI covers, in one line: the design, its units and the smallest change it finds."""
    primary = comparison.primary
    if comparison.design is Design.SINGLE:
        return "design: one run per arm; the noise between runs is unknown, so no significance verdict"
    paired = comparison.design is Design.PAIRED
    unit = f"{comparison.clusters} rounds" if paired else f"{comparison.clusters} runs per arm"
    found = ""
    if primary is not None and primary.mde_pct is not None:
        found = f"; the smallest {primary.label} change it finds with 80% power: {primary.mde_pct:.1f}%"
    level = "round" if paired else "run"
    covers = f"the noise between {level}s and within them, not what every {level} shares"
    return f"design: {comparison.design}, {unit}; the CI covers {covers}{found}"


def to_markdown(comparisons: Sequence[Comparison]) -> str:
    """One table per comparison: metric | baseline | candidate | change % | 95% CI | verdict,
    the objective's row first and marked, then the notes and the method."""
    blocks: list[str] = []
    for comp in comparisons:
        lines = [
            f"### {comp.candidate} vs {comp.baseline}",
            "",
            f"| metric | {comp.baseline} | {comp.candidate} | change % | {ci_header(comp)} | verdict |",
            "|---|---:|---:|---:|---|---|",
        ]
        for row in comp.rows:
            name = f"{row.label} ({row.unit})"
            if row.primary:
                name = f"**{name}** (objective)"
            change = "n/a" if row.change_pct is None else _signed(row.change_pct, row.change_unit)
            ci = _ci(row) if row.change_unit == "%" else _ci(row).replace("]", "] pp")
            values = f"{_number(row.baseline)} | {_number(row.candidate)}"
            lines.append(f"| {name} | {values} | {change} | {ci} | {_verdict_cell(row, comp.min_effect_pct)} |")
        lines.append("")
        lines.append(f"- {design_line(comp)}")
        lines.extend(f"- {note}" for note in comp.notes)
        lines.append(f"- method: {comp.method}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
