"""Stopping a study when it is decided (pure): looks at the comparison as rounds are added, each
at the level the alpha-spending function releases for it (see docs/statistics.md, Stopping when
decided).

A look tests the objective of every candidate against the baseline. The study is decided when each
objective's CI lies beyond the minimum effect (a change: improved or worse) or within it (no change
larger than the minimum effect, an equivalence). Looking often and stopping at the first good-looking
answer would inflate false verdicts; here each look k is tested at its own level alpha_k, the share
that Lan-DeMets' Pocock-like spending function releases between the previous look's
fraction of the budget and this one's, and the last look spends what is left. By the union bound,
the chance of any false verdict over all looks stays at or below alpha.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sentinel_exp.analysis.comparison import ALPHA, Comparison
from sentinel_exp.analysis.inference import look_alpha, spent_alpha


@dataclass(frozen=True)
class Look:
    rounds: int
    elapsed_s: float
    alpha: float
    decided: bool
    final: bool

    @property
    def stop(self) -> bool:
        return self.decided or self.final


def decided(comparison: Comparison) -> bool:
    """The objective's CI lies beyond +-min effect, or within it."""
    row = comparison.primary
    if row is None or row.ci_low is None or row.ci_high is None or row.change_unit != "%":
        return False
    delta = comparison.min_effect_pct
    return row.ci_low > delta or row.ci_high < -delta or (-delta <= row.ci_low and row.ci_high <= delta)


@dataclass
class LookPlan:
    """The looks of a study with a machine-time budget: the first after the planned rounds, then
    every half as many rounds again, until decided or out of budget."""

    budget_s: float
    first: int  # rounds before the first look
    alpha: float = ALPHA
    looks: list[Look] = field(default_factory=list)
    # When a comparison is decided: by default its CI beyond or within the minimum effect; a caller
    # with a narrower question (the doctor's: improved, or a worthwhile gain ruled out) passes its own.
    settles: Callable[[Comparison], bool] = decided

    @property
    def every(self) -> int:
        return max(1, self.first // 2)

    @property
    def spent(self) -> float:
        """Alpha spent by the looks so far."""
        return sum(look.alpha for look in self.looks)

    def due(self, rounds: int) -> bool:
        return rounds >= self.first and (rounds - self.first) % self.every == 0

    def look(self, rounds: int, elapsed_s: float, compare_at: Callable[[float], Sequence[Comparison]]) -> Look:
        """Test at this look's level; the last look (the next would overrun the budget) spends
        the rest of alpha."""
        per_round = elapsed_s / max(1, rounds)
        final = elapsed_s + per_round * self.every > self.budget_s
        previous = self.looks[-1].elapsed_s / self.budget_s if self.looks else 0.0
        fraction = min(1.0, elapsed_s / self.budget_s)
        level = self.alpha - self.spent if final else look_alpha(fraction, previous, self.alpha)
        level = max(level, 1e-12)
        comparisons = compare_at(level)
        look = Look(rounds, elapsed_s, level, bool(comparisons) and all(map(self.settles, comparisons)), final)
        self.looks.append(look)
        return look

    @property
    def next_rounds(self) -> int:
        return self.looks[-1].rounds + self.every if self.looks else self.first

    def as_dict(self) -> dict[str, Any]:
        last = self.looks[-1] if self.looks else None
        return {
            "budget_s": self.budget_s,
            "alpha": last.alpha if last is not None else self.alpha,
            "decided": bool(last and last.decided),
            "looks": [asdict(look) for look in self.looks],
            "spending": "Lan-DeMets Pocock-like alpha spending, union bound over the looks",
            "spent_by_fraction": {f"{f:.2f}": spent_alpha(f, self.alpha) for f in (0.25, 0.5, 0.75, 1.0)},
        }
