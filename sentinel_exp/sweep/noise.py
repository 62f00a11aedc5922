"""This machine's noise, from an A/A study (sweep=aa): one configuration measured as two arms of one
interleaved study, so every difference between them is noise (pure).

Per metric it says the CI half-width this design reached and the smallest change it finds with 80%
power (its minimum detectable effect), and how the latter shrinks with more machine time: the
standard error falls with the square root of the rounds, and rounds cost time in proportion.
The parent run keeps it (tags and metrics), so a later comparison on the same host, server and model
can quote it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sentinel_exp import tags as tag
from sentinel_exp.analysis.comparison import Comparison

BUDGETS_S = (60.0, 300.0, 600.0)  # the machine times the MDE is projected to
NOISE_TAG = tag.NOISE_OF  # on an A/A sweep's parent: "host|server kind|model"


@dataclass(frozen=True)
class NoiseRow:
    metric: str
    label: str
    half_width_pct: float
    mde_pct: float


@dataclass(frozen=True)
class NoiseReport:
    requests: int  # per arm
    rounds: int
    seconds: float  # the study's machine time, both arms
    rows: tuple[NoiseRow, ...]

    def mde_at(self, metric: str, budget_s: float) -> float | None:
        """The MDE of `metric` with `budget_s` of machine time instead of this study's."""
        row = next((r for r in self.rows if r.metric == metric), None)
        if row is None or self.seconds <= 0:
            return None
        return row.mde_pct * math.sqrt(self.seconds / budget_s)

    def metrics(self) -> dict[str, float]:
        """For the parent run: noise_<metric>_halfwidth_pct and noise_<metric>_mde_pct."""
        out = {"noise_requests": float(self.requests), "noise_seconds": self.seconds}
        for row in self.rows:
            out[f"noise_{row.metric}_halfwidth_pct"] = row.half_width_pct
            out[f"noise_{row.metric}_mde_pct"] = row.mde_pct
        return out


def noise_report(comparison: Comparison, requests: int, seconds: float) -> NoiseReport:
    """The A/A comparison's intervals, as this machine's noise per metric."""
    rows = tuple(
        NoiseRow(r.metric, r.label, (r.ci_high - r.ci_low) / 2, r.mde_pct)
        for r in comparison.rows
        if r.ci_low is not None and r.ci_high is not None and r.mde_pct is not None and r.change_unit == "%"
    )
    return NoiseReport(requests, comparison.clusters, seconds, rows)


def noise_identity(tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """Where a noise figure applies: the host, the server kind and the model of a run."""
    parts = (tags.get(tag.CLIENT_HOST), tags.get(tag.SERVER_KIND), params.get("model.name"))
    return "|".join(part or "?" for part in parts)


def to_markdown(report: NoiseReport, objective: str) -> str:
    lines = [
        "# This machine's noise (A/A study)",
        "",
        f"One configuration as two arms of one interleaved study: {report.requests} requests per arm in "
        f"{report.rounds} rounds, {report.seconds:.0f} s of machine time. Every difference is noise.",
        "",
        "| metric | CI half-width | smallest change found (80% power) |",
        "|---|---:|---:|",
        *(f"| {r.label} | ±{r.half_width_pct:.1f}% | {r.mde_pct:.1f}% |" for r in report.rows),
        "",
    ]
    projected = [(b, report.mde_at(objective, b)) for b in BUDGETS_S]
    if all(m is not None for _, m in projected):
        lines.append(
            f"The smallest {objective} change a study of this design finds, by machine time: "
            + ", ".join(f"{m:.1f}% in {b:.0f} s" for b, m in projected)
            + " (the standard error falls with the square root of the rounds)."
        )
    return "\n".join(lines) + "\n"


def console_lines(report: NoiseReport, objective: str) -> list[str]:
    row = next((r for r in report.rows if r.metric == objective), None)
    if row is None:
        return ["noise: the objective has no interval in this A/A study"]
    budgets = ", ".join(f"{report.mde_at(objective, b):.1f}% in {b:.0f} s" for b in BUDGETS_S)
    return [
        f"noise of this machine: {row.label} ±{row.half_width_pct:.1f}% (CI half-width) at {report.requests} "
        f"requests per arm; the smallest change found with 80% power: {row.mde_pct:.1f}% here, {budgets}",
        "noise.md in the sweep folder has every metric; later comparisons on this host, server and model quote it",
    ]


def quote(metrics: Mapping[str, float], objective: str, when: str) -> str | None:
    """The line a later comparison prints from an A/A study's parent run metrics."""
    half = metrics.get(f"noise_{objective}_halfwidth_pct")
    mde = metrics.get(f"noise_{objective}_mde_pct")
    if half is None or mde is None:
        return None
    requests = int(metrics.get("noise_requests", 0))
    return (
        f"this machine's noise (sweep=aa of {when}, {requests} requests per arm): {objective} ±{half:.1f}% "
        f"CI half-width, smallest change found with 80% power {mde:.1f}%"
    )
