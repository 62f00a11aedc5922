"""Random quantities of a workload (think time, prompt length): a fixed number, or a distribution.

The syntax is what a Hydra override can write: a number (`workload.think_time_s=2`) is fixed; a
mapping names a distribution and its parameters
(`'workload.think_time_s={distribution:exponential,mean:2}'`):

- `{distribution: exponential, mean: M}`
- `{distribution: uniform, low: L, high: H}`
- `{distribution: lognormal, mean: M, sigma: S}` (M the mean of the value, S the sigma of its log)

Draws take a `random.Random` the caller seeds (from workload.seed), so a run is reproducible. Pure:
no I/O.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sentinel_exp.names import DistributionKind

# The quantile taken as "the longest value" of an unbounded distribution: one draw in a hundred
# goes past it (an exponential think time has no longest value).
TYPICAL_MAX_QUANTILE = 0.99

_PARAMETERS = {
    DistributionKind.exponential: ("mean",),
    DistributionKind.uniform: ("low", "high"),
    DistributionKind.lognormal: ("mean", "sigma"),
}
SYNTAX = (
    "a number, or {distribution: exponential, mean: M}, {distribution: uniform, low: L, high: H} "
    "or {distribution: lognormal, mean: M, sigma: S}"
)


class DistributionError(ValueError):
    """A value that is not a number nor a distribution this module knows."""


@dataclass(frozen=True)
class Distribution:
    """A fixed value (kind None) or one of DistributionKind with its parameters."""

    kind: DistributionKind | None
    mean: float = 0.0
    low: float = 0.0
    high: float = 0.0
    sigma: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.kind is None and self.mean == 0

    def sample(self, rng: random.Random) -> float:
        if self.kind is None:
            return self.mean
        if self.kind == DistributionKind.exponential:
            return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
        if self.kind == DistributionKind.uniform:
            return rng.uniform(self.low, self.high)
        return rng.lognormvariate(self._log_mu(), self.sigma)

    def quantile(self, q: float) -> float:
        """The value a fraction q of the draws stays below."""
        if self.kind is None:
            return self.mean
        if self.kind == DistributionKind.exponential:
            return -self.mean * math.log(1.0 - q)
        if self.kind == DistributionKind.uniform:
            return self.low + q * (self.high - self.low)
        if self.sigma == 0:
            return self.mean
        return math.exp(self._log_mu() + self.sigma * statistics.NormalDist().inv_cdf(q))

    def typical_max(self) -> float:
        """The largest value: exact when bounded, else the TYPICAL_MAX_QUANTILE quantile."""
        return self.high if self.kind == DistributionKind.uniform else self.quantile(TYPICAL_MAX_QUANTILE)

    def expected(self) -> float:
        return (self.low + self.high) / 2 if self.kind == DistributionKind.uniform else self.mean

    def _log_mu(self) -> float:
        return math.log(self.mean) - self.sigma**2 / 2


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_distribution(value: Any) -> Distribution:
    """`value` as a Distribution; DistributionError says what is wrong (values must be 0 or more)."""
    if _number(value):
        if value < 0:
            raise DistributionError(f"must be 0 or more (got {value})")
        return Distribution(None, mean=float(value))
    if not isinstance(value, Mapping):
        raise DistributionError(f"must be {SYNTAX} (got {value!r})")
    given = dict(value)
    name = given.pop("distribution", None)
    if name not in _PARAMETERS:
        raise DistributionError(f"distribution must be one of {', '.join(_PARAMETERS)} (got {name!r}); {SYNTAX}")
    kind = DistributionKind(name)
    wanted = _PARAMETERS[kind]
    if set(given) != set(wanted):
        raise DistributionError(f"the {kind} distribution takes {', '.join(wanted)} (got {', '.join(given) or 'none'})")
    bad = [k for k in wanted if not _number(given[k]) or given[k] < 0]
    if bad:
        raise DistributionError(f"{', '.join(bad)} must be numbers, 0 or more (got {given})")
    params = {k: float(given[k]) for k in wanted}
    if kind == DistributionKind.uniform and params["low"] > params["high"]:
        raise DistributionError(f"uniform needs low <= high (got low={params['low']:g}, high={params['high']:g})")
    if kind == DistributionKind.lognormal and params["mean"] == 0:
        raise DistributionError("a lognormal distribution needs a positive mean")
    return Distribution(kind, **params)


def distribution_problems(path: str, value: Any) -> list[str]:
    """One line when `value` at `path` is not a valid distribution, else none."""
    try:
        parse_distribution(value)
    except DistributionError as exc:
        return [f"{path} {exc}"]
    return []
