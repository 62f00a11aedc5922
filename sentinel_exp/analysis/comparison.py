"""Which change helps? A baseline arm against a candidate arm, per metric, with a verdict that
survives noise: pure statistics, no I/O. Metric names are those of docs/measurement.md.

Request-level metrics (latency percentiles, per-request decode rate, output length) get a
percentile-bootstrap CI of the change % over the arm's successful measured requests; an arm with
repeats is resampled in two stages (runs, then requests within each chosen run), so differences
between runs widen the interval instead of hiding behind thousands of requests. Run-level metrics
(throughput, CPU, GPU, energy, cold starts) have one value per run and are bootstrapped over runs.
The error rate compares as pooled proportions (Newcombe's hybrid score interval). The objective
is the one decisive (primary) row; every other row must pass Holm–Bonferroni on its bootstrap
p-value, so two identical configurations rarely show a spurious "improved" anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from sentinel_exp.analysis.stats import inter_token_latencies, output_tokens, successful, time_per_output_token
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord

CI_METHOD = "percentile"  # percentile bootstrap: the 2.5th and 97.5th percentiles of the replicates
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
DEFAULT_RESAMPLES = 2000
MIN_RESAMPLES = 2000  # p-values resolve to 2/(B+1): enough for Holm over ~20 secondary rows
DEFAULT_MIN_EFFECT_PCT = 2.0  # config: compare.min_effect_pct
MIN_REQUESTS = 20  # fewer successful requests on a side: no CI, verdict "too few requests"
OUTPUT_LENGTH_TOLERANCE = 0.10  # median output tokens differing more: E2E is compared per output token
DEFAULT_OBJECTIVE = "ttft_ms_p50"
_MAX_BLOCKS = 64  # _Atoms: blocks of sorted values; more blocks, a larger product but less counting within
_CHUNK_CELLS = 2_000_000  # resamples x requests per chunk: bounds memory for long runs with many repeats


class Verdict(StrEnum):
    """What a row says: improved/worse only when the change is significant (primary row: its 95%
    CI excludes 0; secondary rows: Holm-adjusted p < 0.05) and larger than the minimum effect."""

    IMPROVED = "improved"
    WORSE = "worse"
    DIFFERS = "differs"  # significant, for a metric with no better direction (output length)
    NO_CHANGE = "no significant change"
    TOO_FEW = "too few requests"
    NO_CI = "no CI (one run)"
    BASELINE_ZERO = "n/a (baseline is 0)"


@dataclass(frozen=True)
class RunResult:
    """One run of a configuration: its request records (all phases; only successful measured
    ones become latency samples) and its flat summary metrics as MLflow stores them."""

    records: Sequence[RequestRecord]
    metrics: Mapping[str, float] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Comparison:
    """All rows of one candidate against the baseline, the objective's (primary) row first."""

    baseline: str
    candidate: str
    objective: str
    rows: tuple[MetricComparison, ...]
    notes: tuple[str, ...]
    method: str

    def row(self, metric: str) -> MetricComparison | None:
        return next((r for r in self.rows if r.metric == metric), None)


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


# --- per-arm samples and resampling -------------------------------------------------------------


@dataclass(frozen=True)
class _ArmSamples:
    """The arm's successful measured requests, pooled over runs in run order, one value per
    request per quantity (NaN where a request has none), and the ITL gaps with their request."""

    run_sizes: tuple[int, ...]
    values: dict[str, NDArray[np.float64]]
    gaps: NDArray[np.float64]
    gap_request: NDArray[np.int64]
    finished: int  # measured requests that ended ok or failed (not cancelled)
    failed: int

    @property
    def n_requests(self) -> int:
        return sum(self.run_sizes)

    def count(self, quantity: str) -> int:
        if quantity == "itl":
            return int(np.unique(self.gap_request).size)
        return int(np.count_nonzero(~np.isnan(self.values[quantity])))


def _optional(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _samples(arm: Arm) -> _ArmSamples:
    quantities = ("ttfb", "ttft", "e2e", "e2e_per_token", "tpot", "decode_rate", "output_tokens")
    columns: dict[str, list[float]] = {k: [] for k in quantities}
    gaps: list[float] = []
    gap_request: list[int] = []
    sizes: list[int] = []
    finished = failed = 0
    for run in arm.runs:
        ok = successful(run.records)
        sizes.append(len(ok))
        for r in run.records:
            if r.measured and not r.cancelled:
                finished += 1
                failed += not r.ok
        for r in ok:
            request = len(columns["ttft"])
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
        run_sizes=tuple(sizes),
        values={k: np.asarray(v, dtype=np.float64) for k, v in columns.items()},
        gaps=np.asarray(gaps, dtype=np.float64),
        gap_request=np.asarray(gap_request, dtype=np.int64),
        finished=finished,
        failed=failed,
    )


def _draw_counts(run_sizes: Sequence[int], resamples: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """How often each request (pooled, in run order) is drawn in each of `resamples` replicates:
    one run, plain resampling of its requests; several, runs with replacement and then requests
    with replacement within each chosen run."""
    sizes = np.asarray(run_sizes, dtype=np.int64)
    n_total = int(sizes.sum())
    row_offsets = (np.arange(resamples, dtype=np.int64) * n_total)[:, None]
    if sizes.size == 1:
        flat = (rng.integers(0, n_total, size=(resamples, n_total)) + row_offsets).ravel()
    elif (sizes == sizes[0]).all():
        n = int(sizes[0])
        chosen = rng.integers(0, sizes.size, size=(resamples, sizes.size, 1))
        within = rng.integers(0, n, size=(resamples, sizes.size, n))
        flat = (chosen * n + within + row_offsets[:, :, None]).ravel()
    else:
        run_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        n_max = int(sizes.max())
        slot_positions = np.arange(n_max, dtype=np.int64)[None, :]
        chosen = rng.integers(0, sizes.size, size=(resamples, sizes.size))
        pieces: list[NDArray[np.int64]] = []
        for slot in range(sizes.size):
            run = chosen[:, slot]
            n_run = sizes[run][:, None]
            within = (rng.random((resamples, n_max)) * n_run).astype(np.int64)
            drawn = run_starts[run][:, None] + within + row_offsets
            pieces.append(drawn[slot_positions < n_run])
        flat = np.concatenate(pieces)
    # float32 counts (exact below 2**24) halve the memory traffic of the gathers, sums and products.
    counts = np.bincount(flat, minlength=resamples * n_total).reshape(resamples, n_total)
    return counts.astype(np.float32)


def _chunks(resamples: int, n_requests: int) -> Iterator[int]:
    size = max(1, _CHUNK_CELLS // max(1, n_requests))
    done = 0
    while done < resamples:
        step = min(size, resamples - done)
        yield step
        done += step


class _Atoms:
    """Values owned by requests, for exact percentiles of every bootstrap replicate without a sort
    per replicate: one value per request for TTFT and the like, every gap of the request for ITL.

    The values are sorted once and cut into blocks; [request, block] counts how many of the
    request's values fall in the block. A replicate, given as how often each request was drawn,
    finds the block holding its j-th smallest value with one matrix product (all replicates at
    once), then the value itself by counting within that block only."""

    def __init__(self, values: NDArray[np.float64], owners: NDArray[np.int64], n_requests: int) -> None:
        order = np.argsort(values, kind="stable")
        n = values.size
        blocks = max(1, min(_MAX_BLOCKS, round(math.sqrt(n))))
        self.block_size = -(-n // blocks)
        blocks = -(-n // self.block_size)
        pad = blocks * self.block_size - n
        sorted_owners = owners[order]
        self.values = np.concatenate([values[order], np.full(pad, values[order][-1])])
        self.owners = np.concatenate([sorted_owners, np.zeros(pad, dtype=np.int64)]).reshape(blocks, -1)
        self.membership = np.zeros((n_requests, blocks), dtype=np.float32)
        np.add.at(self.membership, (sorted_owners, np.arange(n) // self.block_size), 1.0)

    def percentiles(self, counts: NDArray[np.float32], qs: Sequence[float]) -> list[NDArray[np.float64]]:
        """np.percentile's linear method on each replicate's values (rows of `counts`)."""
        block_cum = np.cumsum(counts @ self.membership, axis=1)  # exact: whole numbers below 2**24
        m = block_cum[:, -1].astype(np.float64)
        last = np.maximum(m - 1.0, 0.0)
        out = []
        for q in qs:
            position = last * (q / 100.0)
            below = np.floor(position)
            lo, hi = self._neighbours(counts, block_cum, below, np.minimum(below + 1.0, last))
            result = lo + (position - below) * (hi - lo)
            result[m == 0] = np.nan
            out.append(result)
        return out

    def _neighbours(
        self,
        counts: NDArray[np.float32],
        block_cum: NDArray[np.float32],
        j: NDArray[np.float64],
        k: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per replicate, its j-th and k-th smallest values (0-based; k = j or j + 1): k is
        nearly always in j's block, and is looked up in its own only where it is not."""
        rows = np.arange(counts.shape[0])
        block = np.minimum(np.count_nonzero(block_cum <= j[:, None], axis=1), block_cum.shape[1] - 1)
        before = np.where(block > 0, block_cum[rows, np.maximum(block - 1, 0)], 0.0)
        # Padding past the last value belongs to request 0, but j and k are below the replicate's
        # count of values, so the search stops at a real value first.
        weights = np.take_along_axis(counts, self.owners[block], axis=1)
        within = np.cumsum(weights, axis=1) + before[:, None]
        start = block * self.block_size
        at_j = np.minimum(np.count_nonzero(within <= j[:, None], axis=1), self.block_size - 1)
        at_k = np.count_nonzero(within <= k[:, None], axis=1)
        lo: NDArray[np.float64] = self.values[start + at_j]
        hi: NDArray[np.float64] = self.values[start + np.minimum(at_k, self.block_size - 1)]
        elsewhere = at_k >= self.block_size
        if elsewhere.any():
            hi[elsewhere] = self._neighbours(counts[elsewhere], block_cum[elsewhere], k[elsewhere], k[elsewhere])[0]
        return lo, hi


def _request_replicates(
    samples: _ArmSamples, metrics: Sequence[_RequestMetric], resamples: int, rng: np.random.Generator
) -> dict[str, NDArray[np.float64]]:
    """Each metric's statistic in every bootstrap replicate; one draw of requests per replicate
    serves all metrics."""
    atoms: dict[str, _Atoms] = {}
    for m in metrics:
        if m.quantity in atoms:
            continue
        if m.quantity == "itl":
            atoms["itl"] = _Atoms(samples.gaps, samples.gap_request, samples.n_requests)
        else:
            values = samples.values[m.quantity]
            owners = np.flatnonzero(~np.isnan(values))
            atoms[m.quantity] = _Atoms(values[owners], owners, samples.n_requests)
    wanted: dict[str, list[_RequestMetric]] = {}
    for m in metrics:
        wanted.setdefault(m.quantity, []).append(m)

    out: dict[str, list[NDArray[np.float64]]] = {m.metric: [] for m in metrics}
    for chunk in _chunks(resamples, samples.n_requests):
        counts = _draw_counts(samples.run_sizes, chunk, rng)
        for quantity, quantity_metrics in wanted.items():
            results = atoms[quantity].percentiles(counts, [m.q for m in quantity_metrics])
            for m, result in zip(quantity_metrics, results, strict=True):
                out[m.metric].append(result)
    return {k: np.concatenate(v) for k, v in out.items()}


def _point(samples: _ArmSamples, m: _RequestMetric) -> float:
    values = samples.gaps if m.quantity == "itl" else samples.values[m.quantity]
    values = values[~np.isnan(values)]
    return float(np.percentile(values, m.q)) if values.size else math.nan


# --- inference ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    change: float | None
    ci: tuple[float, float] | None
    p: float | None


def _ratio_estimate(
    base: float, cand: float, base_reps: NDArray[np.float64] | None, cand_reps: NDArray[np.float64] | None
) -> _Estimate:
    if base == 0:
        return _Estimate(0.0 if cand == 0 else None, None, None)
    change = 100.0 * (cand - base) / base
    if base_reps is None or cand_reps is None:
        return _Estimate(change, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = 100.0 * (cand_reps - base_reps) / base_reps
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return _Estimate(change, None, None)
    low, high = np.percentile(reps, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    # Two-sided bootstrap p: the share of replicates on the far side of "no change", +1 so that
    # no finite number of resamples claims p = 0. It agrees with the percentile CI excluding 0.
    beyond = min(np.count_nonzero(reps <= 0), np.count_nonzero(reps >= 0))
    p = min(1.0, 2.0 * (beyond + 1) / (reps.size + 1))
    return _Estimate(change, (float(low), float(high)), p)


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


_Z = _normal_quantile(1 - ALPHA / 2)


def _error_rate_estimate(base: _ArmSamples, cand: _ArmSamples) -> _Estimate:
    x_b, n_b, x_c, n_c = base.failed, base.finished, cand.failed, cand.finished
    change = 100.0 * (x_c / n_c - x_b / n_b)
    low, high = _newcombe(x_b, n_b, x_c, n_c, _Z)
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
    return _Estimate(change, (100.0 * low, 100.0 * high), p)


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


def _run_values(arm: Arm, metric: str) -> NDArray[np.float64]:
    values = [run.metrics[metric] for run in arm.runs if metric in run.metrics]
    return np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)


def _run_replicates(values: NDArray[np.float64], resamples: int, rng: np.random.Generator) -> NDArray[np.float64]:
    draws = rng.integers(0, values.size, size=(resamples, values.size))
    result: NDArray[np.float64] = values[draws].mean(axis=1)
    return result


def compare(
    baseline: Arm,
    candidate: Arm,
    *,
    objective: str = DEFAULT_OBJECTIVE,
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Every metric both arms have, baseline against candidate. `objective` (sweep.objective)
    names the primary row; a change counts only when its CI excludes 0 (secondary rows: when the
    Holm-adjusted p < 0.05) and it exceeds `min_effect_pct` of the baseline (compare.min_effect_pct)."""
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples={resamples}: at least {MIN_RESAMPLES} for p-values fine enough for Holm")
    if not baseline.runs or not candidate.runs:
        raise ValueError("each arm needs at least one run")
    seeds = np.random.SeedSequence(seed).spawn(4)
    rng_base_req, rng_cand_req, rng_base_run, rng_cand_run = (np.random.default_rng(s) for s in seeds)
    base, cand = _samples(baseline), _samples(candidate)
    notes: list[str] = []

    lengths_differ = _output_lengths_differ(base, cand, notes)
    if lengths_differ and objective in {m.metric for m in _E2E_METRICS}:
        replacement = objective.replace("e2e_ms_", "e2e_ms_per_token_")
        notes.append(f"objective {objective} is compared as {replacement}")
        objective = replacement
    rows = _request_rows(base, cand, objective, lengths_differ, resamples, (rng_base_req, rng_cand_req))
    if base.finished and cand.finished:
        rows.append(_error_rate_row(base, cand))
    rows += _run_rows(baseline, candidate, resamples, (rng_base_run, rng_cand_run), notes)

    if not any(r.metric == objective for r in rows):
        notes.append(f"objective {objective} is not among the compared metrics: every row is secondary")
    repeats = len(baseline.runs) > 1 or len(candidate.runs) > 1
    return Comparison(
        baseline=baseline.name,
        candidate=candidate.name,
        objective=objective,
        rows=_settle(rows, objective, min_effect_pct),
        notes=tuple(notes),
        method=_method(resamples, seed, repeats, min_effect_pct),
    )


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
    base: _ArmSamples,
    cand: _ArmSamples,
    objective: str,
    lengths_differ: bool,
    resamples: int,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> list[_Row]:
    """Rows of the per-request metrics both arms have (the objective's first when it is one of
    them and not a standard row), bootstrapped over requests (within runs)."""
    request_metrics = [
        *_LATENCY_METRICS,
        *(_E2E_PER_TOKEN_METRICS if lengths_differ else _E2E_METRICS),
        *_DECODE_METRICS,
        _OUTPUT_TOKENS,
    ]
    extra = _objective_metric(objective)
    if extra is not None and extra.metric not in {m.metric for m in request_metrics}:
        request_metrics.insert(0, extra)
    request_metrics = [m for m in request_metrics if base.count(m.quantity) and cand.count(m.quantity)]
    enough = [
        m for m in request_metrics if base.count(m.quantity) >= MIN_REQUESTS and cand.count(m.quantity) >= MIN_REQUESTS
    ]
    base_reps = _request_replicates(base, enough, resamples, rngs[0]) if enough else {}
    cand_reps = _request_replicates(cand, enough, resamples, rngs[1]) if enough else {}

    rows: list[_Row] = []
    for m in request_metrics:
        b, c = _point(base, m), _point(cand, m)
        n_b, n_c = base.count(m.quantity), cand.count(m.quantity)
        estimate = _ratio_estimate(b, c, base_reps.get(m.metric), cand_reps.get(m.metric))
        blocked = Verdict.TOO_FEW if min(n_b, n_c) < MIN_REQUESTS else None
        rows.append(_Row(m.metric, m.label, m.unit, m.direction, b, c, estimate, n_b, n_c, blocked=blocked))
    return rows


def _error_rate_row(base: _ArmSamples, cand: _ArmSamples) -> _Row:
    """Failed over finished requests, pooled over runs; its change is in percentage points."""
    return _Row(
        ERROR_RATE,
        "error rate",
        "%",
        _LOWER,
        100.0 * base.failed / base.finished,
        100.0 * cand.failed / cand.finished,
        _error_rate_estimate(base, cand),
        base.finished,
        cand.finished,
        change_unit="pp",
        blocked=Verdict.TOO_FEW if min(base.finished, cand.finished) < MIN_REQUESTS else None,
    )


def _run_rows(
    baseline: Arm,
    candidate: Arm,
    resamples: int,
    rngs: tuple[np.random.Generator, np.random.Generator],
    notes: list[str],
) -> list[_Row]:
    """Rows of the run-level metrics (one value a run), bootstrapped over runs: no CI below two
    runs on a side, and a note when a side has only two."""
    rows: list[_Row] = []
    two_run_metrics: list[str] = []
    for rm in _RUN_METRICS:
        v_b, v_c = _run_values(baseline, rm.metric), _run_values(candidate, rm.metric)
        if not v_b.size or not v_c.size:
            if v_b.size or v_c.size:
                notes.append(f"{rm.metric} is in one arm only: not compared")
            continue
        b, c = float(v_b.mean()), float(v_c.mean())
        with_ci = v_b.size >= 2 and v_c.size >= 2
        estimate = _ratio_estimate(
            b,
            c,
            _run_replicates(v_b, resamples, rngs[0]) if with_ci else None,
            _run_replicates(v_c, resamples, rngs[1]) if with_ci else None,
        )
        if with_ci and min(v_b.size, v_c.size) == 2:
            two_run_metrics.append(rm.metric)
        n_b, n_c, blocked = int(v_b.size), int(v_c.size), None if with_ci else Verdict.NO_CI
        rows.append(_Row(rm.metric, rm.label, rm.unit, rm.direction, b, c, estimate, n_b, n_c, blocked=blocked))
    if two_run_metrics:
        notes.append(
            f"{', '.join(two_run_metrics)}: bootstrapped over only 2 runs on a side, a coarse interval; "
            f"more repeats give a trustworthy one"
        )
    return rows


def _method(resamples: int, seed: int, repeats: bool, min_effect_pct: float) -> str:
    return (
        f"{CI_METHOD} bootstrap, {resamples} resamples, seed {seed}; "
        + ("two-stage (runs, then requests within each run)" if repeats else "requests resampled")
        + f"; error rate: Newcombe hybrid score interval, pooled over runs; {int(100 * CONFIDENCE)}% CIs "
        f"unadjusted; secondary rows significant only when Holm-adjusted p < {ALPHA:.2f}; "
        f"min effect {min_effect_pct:g}%"
    )


def compare_many(
    baseline: Arm,
    candidates: Sequence[Arm],
    *,
    objective: str = DEFAULT_OBJECTIVE,
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Comparison]:
    """Each candidate against the one baseline (no adjustment across candidates)."""
    return [
        compare(baseline, c, objective=objective, min_effect_pct=min_effect_pct, resamples=resamples, seed=seed)
        for c in candidates
    ]


def _settle(rows: Sequence[_Row], objective: str, min_effect_pct: float) -> tuple[MetricComparison, ...]:
    tested = [i for i, r in enumerate(rows) if r.blocked is None and r.estimate.p is not None]
    secondary = [i for i in tested if rows[i].metric != objective]
    adjusted: dict[int, float] = dict(zip(secondary, _holm([_p(rows[i]) for i in secondary]), strict=True))

    out: list[MetricComparison] = []
    for i, r in enumerate(rows):
        primary = r.metric == objective
        est = r.estimate
        p_adj = _p(r) if primary and i in tested else adjusted.get(i)
        verdict = _verdict(r, primary, p_adj, min_effect_pct)
        out.append(
            MetricComparison(
                metric=r.metric,
                label=r.label,
                unit=r.unit,
                baseline=r.baseline,
                candidate=r.candidate,
                change_pct=est.change,
                ci_low=est.ci[0] if est.ci and r.blocked is None else None,
                ci_high=est.ci[1] if est.ci and r.blocked is None else None,
                p_value=est.p if r.blocked is None else None,
                p_adjusted=p_adj,
                verdict=verdict,
                primary=primary,
                direction=r.direction,
                change_unit=r.change_unit,
                n_baseline=r.n_baseline,
                n_candidate=r.n_candidate,
            )
        )
    out.sort(key=lambda row: not row.primary)  # the decisive row first; the rest keep their order
    return tuple(out)


def _p(row: _Row) -> float:
    assert row.estimate.p is not None
    return row.estimate.p


def _verdict(row: _Row, primary: bool, p_adjusted: float | None, min_effect_pct: float) -> Verdict:
    est = row.estimate
    if row.blocked is not None:
        return row.blocked
    if est.change is None:
        return Verdict.BASELINE_ZERO
    if est.ci is None or p_adjusted is None:
        return Verdict.NO_CHANGE if est.change == 0 else Verdict.NO_CI
    excludes_zero = est.ci[0] > 0 or est.ci[1] < 0
    significant = excludes_zero if primary else p_adjusted < ALPHA
    # The same rule for % and pp rows: the move must exceed min_effect_pct of the baseline value,
    # so an error rate rising from 0 counts once it is significant.
    large_enough = abs(row.candidate - row.baseline) > min_effect_pct / 100.0 * abs(row.baseline)
    if not (significant and large_enough):
        return Verdict.NO_CHANGE
    if row.direction is None:
        return Verdict.DIFFERS
    lower = row.candidate < row.baseline
    return Verdict.IMPROVED if lower == (row.direction == Direction.minimize) else Verdict.WORSE


# --- rendering ----------------------------------------------------------------------------------


def _number(value: float) -> str:
    """Three significant digits, whole numbers from 1000 up: 0.0123, 9.99, 40.2, 329, 1,234."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _signed(value: float, unit: str) -> str:
    suffix = " pp" if unit == "pp" else "%"
    return f"{value:+.1f}{suffix}"


def _ci(row: MetricComparison) -> str:
    if row.ci_low is None or row.ci_high is None:
        return "—"
    return f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]"


def _verdict_cell(row: MetricComparison) -> str:
    if row.p_adjusted is None:
        return str(row.verdict)
    kind = "p" if row.primary else "Holm p"
    return f"{row.verdict} ({kind} {row.p_adjusted:.2g})"


def to_markdown(comparisons: Sequence[Comparison]) -> str:
    """One table per comparison: metric | baseline | candidate | change % | 95% CI | verdict,
    the objective's row first and marked, then the notes and the method."""
    blocks: list[str] = []
    for comp in comparisons:
        lines = [
            f"### {comp.candidate} vs {comp.baseline}",
            "",
            f"| metric | {comp.baseline} | {comp.candidate} | change % | 95% CI | verdict |",
            "|---|---:|---:|---:|---|---|",
        ]
        for row in comp.rows:
            name = f"{row.label} ({row.unit})"
            if row.primary:
                name = f"**{name}** (objective)"
            change = "n/a" if row.change_pct is None else _signed(row.change_pct, row.change_unit)
            ci = _ci(row) if row.change_unit == "%" else _ci(row).replace("]", "] pp")
            values = f"{_number(row.baseline)} | {_number(row.candidate)}"
            lines.append(f"| {name} | {values} | {change} | {ci} | {_verdict_cell(row)} |")
        lines.append("")
        lines.extend(f"- {note}" for note in comp.notes)
        lines.append(f"- method: {comp.method}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
