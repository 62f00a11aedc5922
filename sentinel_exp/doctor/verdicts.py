"""What a study showed (pure): each candidate's comparison with the configuration as given, the
hypothesis confirmed (a fix measured *improved*), refuted (measured, and none improved) or
undecided (too few requests for an interval); a ladder's points with their intervals, and the
prefill rate fitted over its rungs, round by round as the study paired them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from sentinel_exp.analysis.comparison import CONFIDENCE, Comparison, MetricComparison, Verdict
from sentinel_exp.analysis.stats import successful
from sentinel_exp.doctor.hypotheses import Candidate, Hypothesis, Lever, Status
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord

BOOTSTRAP = 2000


@dataclass(frozen=True)
class Measured:
    """One candidate against what it was compared with (the configuration as given; the cold run
    against the warm one)."""

    candidate: Candidate
    comparison: Comparison

    @property
    def row(self) -> MetricComparison | None:
        return self.comparison.primary

    @property
    def improved(self) -> bool:
        return self.row is not None and self.row.verdict == Verdict.IMPROVED

    def rules_out_gain(self, min_gain_pct: float) -> bool:
        return rules_out_gain(self.row, min_gain_pct)


def rules_out_gain(row: MetricComparison | None, min_gain_pct: float) -> bool:
    """The row's interval rules out an improvement of `min_gain_pct` or more: worse, equivalent, or
    no significant change with the improving end of the interval short of it."""
    if row is None or row.verdict in (Verdict.TOO_FEW, Verdict.NO_CI) or row.ci_low is None or row.ci_high is None:
        return False
    if row.verdict in (Verdict.WORSE, Verdict.EQUIVALENT):
        return True
    best_end = row.ci_low if row.direction != Direction.maximize else -row.ci_high
    return best_end > -min_gain_pct


def settles(min_gain_pct: float) -> Callable[[Comparison], bool]:
    """When a look may stop a doctor's study: the candidate came out improved, or its interval
    rules out a gain of `min_gain_pct`. That is all the verdict (`judge`) asks; waiting for the
    interval to fall within the minimum effect, as a sweep does, spends the budget on a question
    the doctor does not ask."""

    def settled(comparison: Comparison) -> bool:
        row = comparison.primary
        return (row is not None and row.verdict == Verdict.IMPROVED) or rules_out_gain(row, min_gain_pct)

    return settled


@dataclass(frozen=True)
class Point:
    """One rung of a ladder: its place on the axis, the objective's p50 with its 95% interval."""

    x: float
    y: float
    low: float
    high: float
    label: str


@dataclass(frozen=True)
class Rate:
    """A slope fitted round by round: ms of the objective per unit of the axis, with its interval."""

    per_unit_ms: float
    low: float
    high: float
    rounds: int


@dataclass(frozen=True)
class Outcome:
    hypothesis: Hypothesis
    status: Status
    measured: tuple[Measured, ...] = ()
    best: Measured | None = None
    ladder: tuple[Point, ...] = ()
    rate: Rate | None = None
    note: str = ""  # why not run, or what else the study found
    folder: str | None = None  # where its arms are

    @property
    def cause(self) -> str:
        return str(self.hypothesis.cause)


def planned(hypothesis: Hypothesis) -> Outcome:
    """A hypothesis that no study tests (skipped or not testable) as it stands."""
    return Outcome(hypothesis, hypothesis.status)


def not_run(hypothesis: Hypothesis, why: str) -> Outcome:
    return Outcome(hypothesis, Status.NOT_RUN, note=why)


def _gain(m: Measured) -> float:
    row = m.row
    return -(row.change_pct or 0.0) if row is not None else 0.0


def judge(hypothesis: Hypothesis, measured: Sequence[Measured], min_gain_pct: float) -> Outcome:
    """Confirmed when a fix or trade came out improved (the best is the largest improvement, a
    fix before a trade); refuted when every one's interval rules out a gain of `min_gain_pct` or
    more; else undecided: an interval still allows a gain worth having. A probe (the cold run)
    measures a cost and confirms nothing by itself."""
    fixes = [m for m in measured if m.candidate.lever != Lever.PROBE]
    improved = [m for m in fixes if m.improved]
    if improved:
        best = max(improved, key=lambda m: (m.candidate.lever == Lever.FIX, _gain(m)))
        return Outcome(hypothesis, Status.CONFIRMED, tuple(measured), best)
    if fixes and all(m.rules_out_gain(min_gain_pct) for m in fixes):
        why = f"none improved, and every interval rules out a gain of {min_gain_pct:g}% or more"
        return Outcome(hypothesis, Status.REFUTED, tuple(measured), note=why)
    open_ = [m.candidate.label for m in fixes if not m.rules_out_gain(min_gain_pct)]
    why = f"the interval of {', '.join(open_)} still allows a gain of {min_gain_pct:g}% or more"
    return Outcome(hypothesis, Status.UNDECIDED, tuple(measured), note=why)


def with_ladder(outcome: Outcome, ladder: Sequence[Point], rate: Rate | None) -> Outcome:
    return replace(outcome, ladder=tuple(sorted(ladder, key=lambda p: p.x)), rate=rate)


def _values(records: Sequence[RequestRecord], metric: str) -> list[float]:
    quantity = metric.split("_ms_", 1)[0]
    field = {"ttft": "ttft_ms", "e2e": "e2e_ms", "ttfb": "ttfb_ms"}.get(quantity, "ttft_ms")
    return [v for r in successful(records) if (v := getattr(r, field)) is not None]


def point(records: Sequence[RequestRecord], metric: str, x: float, label: str, seed: int = 0) -> Point | None:
    """The objective's p50 over an arm's requests with a 95% percentile-bootstrap interval."""
    values = np.asarray(_values(records, metric), dtype=float)
    if values.size < 2:
        return None
    draws = np.random.default_rng(seed).choice(values, size=(BOOTSTRAP, values.size), replace=True)
    low, high = np.percentile(np.median(draws, axis=1), [2.5, 97.5])
    return Point(x, float(np.median(values)), float(low), float(high), label)


def _per_round(records: Sequence[RequestRecord], metric: str) -> dict[int, tuple[float, float]]:
    """Each round's median prompt tokens and median objective for one arm."""
    field = "ttft_ms" if metric.startswith("ttft") else "e2e_ms"
    rounds: dict[int, list[tuple[float, float]]] = {}
    for r in successful(records):
        y = getattr(r, field)
        if r.block is not None and r.prompt_eval_count is not None and y is not None:
            rounds.setdefault(r.block, []).append((float(r.prompt_eval_count), float(y)))
    return {b: (float(np.median([x for x, _ in v])), float(np.median([y for _, y in v]))) for b, v in rounds.items()}


def prefill_rate(arms: Mapping[str, Sequence[RequestRecord]], metric: str = "ttft_ms_p50") -> Rate | None:
    """ms of TTFT per prompt token: in each round, the least-squares slope of the arms' median TTFT
    over their median prompt length; then the mean slope over the rounds with a t interval (the
    round is the unit, as in the comparisons: requests of one round share its moment)."""
    by_arm = [_per_round(records, metric) for records in arms.values()]
    common = set.intersection(*(set(a) for a in by_arm)) if by_arm else set()
    slopes = []
    for block in sorted(common):
        xs = np.asarray([a[block][0] for a in by_arm])
        ys = np.asarray([a[block][1] for a in by_arm])
        if np.ptp(xs) > 0:
            slopes.append(float(np.polyfit(xs, ys, 1)[0]))
    if len(slopes) < 2:
        return None
    mean = float(np.mean(slopes))
    t = float(special.stdtrit(len(slopes) - 1, 0.5 + CONFIDENCE / 2))
    half = t * float(np.std(slopes, ddof=1)) / math.sqrt(len(slopes))
    return Rate(mean, mean - half, mean + half, len(slopes))
