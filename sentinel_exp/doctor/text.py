"""The doctor's words (pure): the answer first, then one line per hypothesis, the recommended
configuration as one command line, what could not be tested, and report.md around them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sentinel_exp.analysis.comparison import MetricComparison, design_line, to_markdown, verdict_text
from sentinel_exp.analysis.diagnosis import PART_LABELS
from sentinel_exp.doctor.evidence import Evidence
from sentinel_exp.doctor.hypotheses import PARTS, SEED_NAMES, Cause, Lever, Status
from sentinel_exp.doctor.verdicts import Measured, Outcome, Rate
from sentinel_exp.report.markdown import image_links, md_escape

TESTED = (Status.CONFIRMED, Status.REFUTED, Status.UNDECIDED)
LATENCY_LABELS = {"ttft": "TTFT", "e2e": "E2E"}


def ms(value: float) -> str:
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def pct(value: float) -> str:
    return f"{value:+.0f}%" if abs(value) >= 10 else f"{value:+.1f}%"


def interval(row: MetricComparison) -> str:
    if row.ci_low is None or row.ci_high is None:
        return ""
    digits = 0 if max(abs(row.ci_low), abs(row.ci_high)) >= 10 else 1
    return f" [{row.ci_low:+.{digits}f}, {row.ci_high:+.{digits}f}]"


def _value(row: MetricComparison, value: float) -> str:
    return ms(value) if row.unit == "ms" else f"{value:,.3g} {row.unit}"


def change_text(row: MetricComparison) -> str:
    """`TTFT p50 1,213 -> 47 ms, -96% [-97, -95]`."""
    start = ms(row.baseline).removesuffix(" ms") if row.unit == "ms" else f"{row.baseline:,.3g}"
    change = "n/a" if row.change_pct is None else pct(row.change_pct)
    return f"{row.label} {start} -> {_value(row, row.candidate)}, {change}{interval(row)}"


def measured_text(m: Measured) -> str:
    """One candidate's result: its change with the interval, and the verdict."""
    row = m.row
    against = "" if m.comparison.baseline == "as given" else f" vs {m.comparison.baseline}"
    if row is None:
        return f"{m.candidate.label}{against}: no objective row ({'; '.join(m.comparison.notes)})"
    verdict = verdict_text(row, m.comparison.min_effect_pct)
    cost = ""
    if m.candidate.lever == Lever.PROBE and row.unit == "ms":
        cost = f": a cold start costs about {ms(row.candidate - row.baseline)}"
    return f"{m.candidate.label}{against}: {change_text(row)}, {verdict}{cost}"


def rate_text(rate: Rate) -> str:
    tokens_per_s = 1000.0 / rate.per_unit_ms if rate.per_unit_ms > 0 else None
    speed = f" (about {tokens_per_s:,.0f} prompt tokens/s)" if tokens_per_s else ""
    return (
        f"prefill rate {rate.per_unit_ms:.3g} ms per prompt token [{rate.low:.3g}, {rate.high:.3g}]{speed}, "
        f"fitted over the rungs in each of {rate.rounds} rounds"
    )


def title_of(cause: Cause, title: str) -> str:
    seed = SEED_NAMES.get(cause)
    return f'{title} (the seed\'s "{seed}")' if seed else title


def share_text(outcome: Outcome, evidence: Evidence) -> str:
    """`model load is 78% of TTFT`: the part the cause would show in, where it has one."""
    cause = outcome.hypothesis.cause
    if cause not in PARTS:
        return ""
    latency, part = PARTS[cause]
    return f"{PART_LABELS[part]} is {evidence.share(latency, part):.0%} of {LATENCY_LABELS[latency]}"


def hypothesis_line(outcome: Outcome, evidence: Evidence) -> str:
    """`<title>: <verdict>. Evidence: ... Tested: ...`: how it was tested and the result with its CI."""
    h = outcome.hypothesis
    head = f"{title_of(h.cause, h.title)}: {outcome.status}"
    if outcome.status in (Status.SKIPPED, Status.NOT_TESTABLE):
        named = f" Named, not run: {'; '.join(h.named)}." if h.named else ""
        return f"{head}: {h.evidence}.{named}"
    share = share_text(outcome, evidence)
    parts = [f"{head}. Evidence: {share + '; ' if share else ''}{h.evidence}."]
    if outcome.measured:
        rounds = max(m.comparison.clusters for m in outcome.measured)
        tested = "; ".join(measured_text(m) for m in outcome.measured)
        parts.append(f"Tested against the configuration as given, {rounds} paired rounds: {tested}.")
    if outcome.rate is not None:
        parts.append(rate_text(outcome.rate).capitalize() + ".")
    if outcome.best is not None and outcome.best.candidate.lever == Lever.TRADE:
        parts.append(f"{trade_note(outcome.best)}.")
    if outcome.note:
        parts.append(f"{outcome.note[0].upper()}{outcome.note[1:]}.")
    if h.named:
        parts.append(f"Named, not run: {'; '.join(h.named)}.")
    return " ".join(parts)


def trade_note(m: Measured) -> str:
    """What a trade asks of the user: it changes the work, not how the server does it."""
    first = m.candidate.overrides[0]
    if first.startswith("workload.input_tokens"):
        return "A trade: shorter prompts are yours to write; the tool cannot shorten them"
    if first.startswith(("workload.concurrency", "workload.rate")):
        return "A trade: less load at once is your users' to give; more slots or a faster server keep it"
    return "A trade: it shortens the answers; keep it only where shorter answers will do"


def fix_text(m: Measured) -> str:
    """`Fix: keep_alive=-1: TTFT p50 1,180 -> 47 ms (-96% [-97, -95]), measured.`: both ends from the
    study's rounds, where the candidate and the configuration as given ran side by side."""
    row = m.row
    assert row is not None and row.change_pct is not None
    kind = "Fix" if m.candidate.lever == Lever.FIX else "Fix (a trade)"
    start = ms(row.baseline).removesuffix(" ms") if row.unit == "ms" else f"{row.baseline:,.3g}"
    change = f"{pct(row.change_pct)}{interval(row)}"
    return f"{kind}: {m.candidate.label}: {row.label} {start} -> {_value(row, row.candidate)} ({change}), measured."


def _lead(outcome: Outcome, evidence: Evidence) -> str:
    """`TTFT p50 1,213 ms: 78% model load (9 of 30 requests were cold: ...)`: the baseline's value
    of the metric that decided, and the share of its part."""
    latency, part = PARTS.get(outcome.hypothesis.cause, ("ttft", None))
    breakdown = evidence.ttft if latency == "ttft" else evidence.e2e
    if breakdown is None or part is None:
        return outcome.hypothesis.title
    label, value = f"{breakdown.label} p50", breakdown.p50_ms
    row = outcome.best.row if outcome.best is not None else None
    if row is not None and outcome.best is not None and outcome.best.comparison.objective in evidence.metrics:
        label, value = row.label, evidence.metrics[outcome.best.comparison.objective]
    share = f"{evidence.share(latency, part):.0%} {PART_LABELS[part]}"
    return f"{label} {ms(value)}: {share} ({outcome.hypothesis.evidence})"


def answer(evidence: Evidence, outcomes: Sequence[Outcome]) -> str:
    """The report's first line: the cause with its numbers and the fix measured, or that nothing
    was found wrong, or what is still open."""
    confirmed = [o for o in outcomes if o.status == Status.CONFIRMED and o.best is not None]
    if confirmed:
        # The largest part of the latency; at the same part, a fix before a trade.
        lead = max(confirmed, key=lambda o: (o.hypothesis.share, o.best is not None and o.best.candidate.recommended))
        assert lead.best is not None
        text = f"{_lead(lead, evidence)}. {fix_text(lead.best)}"
        others = [f"{o.hypothesis.title} ({o.best.candidate.label})" for o in confirmed if o is not lead and o.best]
        return text + (f" Also confirmed: {'; '.join(others)}." if others else "")
    latencies = ", ".join(f"{b.label} p50 {ms(b.p50_ms)}" for b in (evidence.ttft, evidence.e2e) if b is not None)
    open_ = [o for o in outcomes if o.status in (Status.NOT_RUN, Status.UNDECIDED)]
    if open_:
        names = "; ".join(f"{o.hypothesis.title} ({o.note or o.status})" for o in open_)
        return f"{latencies}: no fix confirmed, and not everything was decided: {names}."
    refuted = sum(1 for o in outcomes if o.status == Status.REFUTED)
    skipped = sum(1 for o in outcomes if o.status == Status.SKIPPED)
    busy = " (on a machine busy with other processes: not its quiet numbers)" if evidence.facts.contended else ""
    return (
        f"{latencies}: nothing wrong found{busy}. {refuted} measured and refuted, {skipped} ruled out "
        f"by the baseline, none confirmed: no change measured made it faster."
    )


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def recommended_line(given: Sequence[str], outcomes: Sequence[Outcome]) -> str | None:
    """The configuration as given with every confirmed fix, as one command line; None when no
    fix that belongs in a configuration was confirmed."""
    extra: list[str] = []
    for o in outcomes:
        if o.status == Status.CONFIRMED and o.best is not None and o.best.candidate.recommended:
            extra += [x for x in o.best.candidate.overrides if _key(x) not in {_key(e) for e in extra}]
    if not extra:
        return None
    changed = {_key(x) for x in extra}
    kept = [o for o in given if _key(o) not in changed]
    return "python -m sentinel_exp " + " ".join([*kept, *extra])


NO_FIX = "the configuration as given: no fix was confirmed"


def trades_line(outcomes: Sequence[Outcome]) -> str | None:
    """The trades confirmed, beside the recommended line and not in it: they change the work."""
    trades = [
        f"{o.best.candidate.label} ({pct(o.best.row.change_pct)})"
        for o in outcomes
        if o.status == Status.CONFIRMED
        and o.best is not None
        and o.best.candidate.lever == Lever.TRADE
        and o.best.row is not None
        and o.best.row.change_pct is not None
    ]
    return "; ".join(trades) or None


def not_tested(outcomes: Sequence[Outcome]) -> list[str]:
    """What could not be tested here, or was not decided, with the reason; fixes named, not run."""
    lines = []
    for o in outcomes:
        h = o.hypothesis
        if o.status == Status.NOT_TESTABLE:
            lines.append(f"{h.title}: {h.evidence}")
        elif o.status in (Status.NOT_RUN, Status.UNDECIDED):
            lines.append(f"{h.title}: {o.status} ({o.note or 'the intervals could not decide'})")
        if h.named and o.status != Status.SKIPPED:
            lines.append(f"{h.title}, named, not run: {'; '.join(h.named)}")
    return lines


@dataclass(frozen=True)
class Report:
    """Everything report.md says."""

    title: str
    evidence: Evidence
    outcomes: tuple[Outcome, ...]
    given: tuple[str, ...]  # the command line's overrides, the doctor's own left out
    baseline_lines: tuple[str, ...]  # its verdict, lint findings and warnings
    baseline_folder: str
    seconds: float  # machine time spent, this run and the runs it resumed
    budget_s: float
    alpha: float  # each candidate's share of the 5%
    finished: bool
    plots: Mapping[str, str] = field(default_factory=dict)  # cause -> figure file
    resumed_from: str | None = None


def console_lines(report: Report) -> list[str]:
    """What the console prints: the answer, one line per hypothesis, the recommended line."""
    lines = [answer(report.evidence, report.outcomes), ""]
    lines += [f"- {hypothesis_line(o, report.evidence)}" for o in report.outcomes]
    lines += ["", f"recommended: {recommended_line(report.given, report.outcomes) or NO_FIX}"]
    trades = trades_line(report.outcomes)
    return lines + ([f"trades measured, yours to choose (they change the work): {trades}"] if trades else [])


def markdown(report: Report) -> str:
    """report.md of the doctor: the answer first."""
    lines = [f"# Why is it slow? {md_escape(report.title)}", ""]
    if not report.finished:
        lines += ["*Stopped before the plan was done: this reports what finished; a rerun resumes.*", ""]
    lines += [f"**{md_escape(answer(report.evidence, report.outcomes))}**", "", "## Hypotheses", ""]
    lines += [f"- {md_escape(hypothesis_line(o, report.evidence))}" for o in report.outcomes]
    line = recommended_line(report.given, report.outcomes)
    lines += ["", "## Recommended configuration", ""]
    lines += ["```bash", line, "```"] if line else [md_escape(NO_FIX.capitalize() + ".")]
    trades = trades_line(report.outcomes)
    if trades:
        lines += ["", md_escape(f"Trades measured, yours to choose (they change the work, not the server): {trades}.")]
    untested = not_tested(report.outcomes)
    lines += ["", "## Could not be tested", "", *([f"- {md_escape(t)}" for t in untested] or ["Nothing."])]
    lines += ["", "## The baseline", "", *[f"- {md_escape(t)}" for t in report.baseline_lines]]
    lines += [f"- its run: `{report.baseline_folder}`"]
    lines += _studies(report)
    lines += ["", "## How this was measured", "", *[f"- {md_escape(t)}" for t in _method(report)]]
    return "\n".join(lines).rstrip() + "\n"


def _studies(report: Report) -> list[str]:
    lines: list[str] = []
    for o in report.outcomes:
        if not o.measured:
            continue
        lines += ["", f"### {md_escape(o.hypothesis.title)}", ""]
        if o.folder:
            lines += [f"Arms in `{o.folder}`.", ""]
        if o.cause in report.plots:
            lines += [*image_links([report.plots[o.cause]]), ""]
        lines += [f"- {design_line(o.measured[0].comparison)}", ""]
        lines += [to_markdown([m.comparison for m in o.measured]).strip()]
    return ["", "## The studies", *lines] if lines else []


def _method(report: Report) -> list[str]:
    out = [
        f"{report.seconds:,.0f} s of machine time of diagnose.budget_s={report.budget_s:g}",
        "each candidate measured against the configuration as given in one interleaved study: one server per "
        "setting, balanced rounds, paired by round, more rounds until decided (docs/statistics.md)",
        f"each candidate's verdicts at alpha {report.alpha:.3g}: the 5% split over every candidate (Bonferroni), so "
        f"that together they find a false improvement at most 5% of the time",
    ]
    if report.resumed_from:
        out.append(f"resumed: the parts finished before were taken from {report.resumed_from}")
    return out
