"""Intervals at the level where the variance lives (pure; see docs/statistics.md).

On a shared machine most of a latency's noise is not between requests but between stretches of
time: a neighbour's burst, the CPU's clock, a drift over minutes. Requests measured together share
it, so they are not independent draws, and an interval that treats them as such is too narrow
(pseudo-replication). Here the unit of analysis is the cluster, the stretch of time that was
placed independently:

- the rounds of an interleaved study, when both arms were measured in the same rounds (paired):
  round r of the baseline and round r of the candidate saw the same moment of the machine, so the
  change is measured within each round, as the ratio of the two arms' statistics in it;
- the runs of each arm otherwise (independent clusters, such as a sequential sweep's repeats).

Each cluster is summarised first (its TTFT p50, say), then the clusters' log statistics are
compared with Student's t: a paired t over the rounds' log ratios, or Welch's t over two arms'
runs. The t reference, with (clusters - 1) degrees of freedom, is what keeps a study of few
clusters honest where a bootstrap over 3 or 10 clusters is too narrow (Cameron, Gelbach and
Miller 2008); summarising each cluster before comparing is the repetition at the level where the
variance lives (Kalibera and Jones 2013). The change is the geometric mean of the ratios,
100 * (exp(mean log ratio) - 1) % against the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# scipy.special, not scipy.stats: the same distributions, imported in a sixth of the time.
from scipy import special

Statistic = Callable[[NDArray[np.float64]], float]
POWER = 0.80  # the minimum detectable effect is the change found with this power


@dataclass(frozen=True)
class Clustered:
    """One arm's values of one quantity (NaN-free), each with the cluster it belongs to."""

    values: NDArray[np.float64]
    clusters: NDArray[np.int64]

    def per_cluster(self, statistic: Statistic) -> dict[int, float]:
        """The statistic of each cluster's own values."""
        order = np.argsort(self.clusters, kind="stable")
        labels, starts = np.unique(self.clusters[order], return_index=True)
        groups = np.split(self.values[order], starts[1:])
        return {int(label): statistic(group) for label, group in zip(labels, groups, strict=True)}


@dataclass(frozen=True)
class LogRatio:
    """The change between two arms on the log scale: the mean log ratio candidate / baseline over
    the clusters, its standard error and the degrees of freedom of its t reference."""

    mean: float
    se: float
    df: float
    clusters: int  # rounds (paired) or the smaller arm's runs

    @property
    def change_pct(self) -> float:
        return 100.0 * math.expm1(self.mean)

    def bounds(self, alpha: float) -> tuple[float, float]:
        """The (1 - alpha) interval of the change in %, against the baseline."""
        half = _t_quantile(1 - alpha / 2, self.df) * self.se
        return 100.0 * math.expm1(self.mean - half), 100.0 * math.expm1(self.mean + half)

    def p_value(self) -> float:
        """Two-sided p of "no change" under t(df)."""
        if self.se == 0.0:
            return 1.0 if self.mean == 0.0 else 0.0
        return float(2.0 * special.stdtr(self.df, -abs(self.mean) / self.se))

    def minimum_detectable_pct(self, alpha: float, power: float = POWER) -> float:
        """The smallest change (in %, upward) this design finds with `power` at level alpha: (t_{1-a/2}
        + t_{power}) standard errors."""
        return 100.0 * math.expm1((_t_quantile(1 - alpha / 2, self.df) + _t_quantile(power, self.df)) * self.se)


def _t_quantile(p: float, df: float) -> float:
    return float(special.stdtrit(df, p)) if math.isfinite(df) else float(special.ndtri(p))


def _logs(stats: list[float]) -> NDArray[np.float64] | None:
    values = np.asarray(stats, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        return None  # a zero or missing statistic has no ratio: no interval rather than a wrong one
    return np.log(values)


def paired_log_ratio(base: Clustered, cand: Clustered, statistic: Statistic) -> LogRatio | None:
    """Both arms measured in the same rounds: the paired t over the rounds that both have values
    in. None with fewer than two such rounds, or a round whose statistic is 0."""
    per_base, per_cand = base.per_cluster(statistic), cand.per_cluster(statistic)
    common = sorted(set(per_base) & set(per_cand))
    if len(common) < 2:
        return None
    log_b, log_c = _logs([per_base[r] for r in common]), _logs([per_cand[r] for r in common])
    if log_b is None or log_c is None:
        return None
    diffs = log_c - log_b
    n = diffs.size
    return LogRatio(float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(n)), float(n - 1), n)


def independent_log_ratio(base: Clustered, cand: Clustered, statistic: Statistic) -> LogRatio | None:
    """Arms measured apart (the runs of a sequential sweep): Welch's t over each arm's cluster
    statistics. None when an arm has a single cluster: its noise between runs is unknown."""
    log_b = _logs(list(base.per_cluster(statistic).values()))
    log_c = _logs(list(cand.per_cluster(statistic).values()))
    if log_b is None or log_c is None or log_b.size < 2 or log_c.size < 2:
        return None
    var_b, var_c = log_b.var(ddof=1) / log_b.size, log_c.var(ddof=1) / log_c.size
    total = var_b + var_c
    if total == 0.0:
        df = float(log_b.size + log_c.size - 2)
    else:
        df = total**2 / (var_b**2 / (log_b.size - 1) + var_c**2 / (log_c.size - 1))
    mean = float(log_c.mean() - log_b.mean())
    return LogRatio(mean, math.sqrt(total), float(df), int(min(log_b.size, log_c.size)))


def spent_alpha(fraction: float, alpha: float) -> float:
    """Lan-DeMets' Pocock-like spending function: the share of alpha a sequential study may have
    spent by `fraction` (0..1) of its budget, alpha * ln(1 + (e - 1) * fraction). It spends early
    looks a fair share (an O'Brien-Fleming-like function spends next to nothing before half the
    budget), which is what lets a clear answer stop a study in its first minutes."""
    if fraction <= 0:
        return 0.0
    return float(alpha * math.log1p((math.e - 1.0) * min(1.0, fraction)))


def look_alpha(fraction: float, previous_fraction: float, alpha: float) -> float:
    """The level of one look: what the spending function releases between the previous look and
    this one. Testing each look at its own share (a union bound over the looks) keeps the chance of
    any false verdict at or below alpha, whatever the correlation between looks."""
    return spent_alpha(fraction, alpha) - spent_alpha(previous_fraction, alpha)
