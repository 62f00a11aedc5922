"""What a person sees: a progress bar on a terminal (quiet in CI), and the closing summary."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sentinel_exp.analysis.comparison import Comparison
from sentinel_exp.analysis.metrics import LATENCY, describe
from sentinel_exp.analysis.slo import SloResult
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord
from sentinel_exp.report.markdown import count_parts, rate_parts, summary_rows
from sentinel_exp.report.markdown import fmt_ms as _fmt
from sentinel_exp.store.run_folder import RunFolder, RunSummary

stdout = Console(highlight=False)
# The sweep table's columns after the job's name; each header is the catalogue's.
SWEEP_COLUMNS = ("ttft_ms_p50", "ttft_ms_p95", "e2e_ms_p50", "output_tokens_per_s", "cold_starts", "requests_failed")
stderr = Console(stderr=True, highlight=False)


def print_table(table: Table) -> None:
    """A table on stdout. A terminal's width fits it to the screen; piped or redirected (a log, CI,
    `| grep`) there is no screen, and rich's 80 columns would fold run ids and paths over lines: it
    is printed at its natural width instead."""
    if stdout.is_terminal:
        stdout.print(table)
        return
    width = stdout.measure(table, options=stdout.options.update_width(100_000)).maximum
    Console(highlight=False, width=max(width, 80)).print(table)


def want_progress(setting: bool | None) -> bool:
    if setting is not None:
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


def _bar(description_width: int) -> Progress:
    return Progress(
        TextColumn(f"[bold]{{task.description:<{description_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )


class RunProgress:
    """One bar per phase; shows the latest TTFT and the failure count as requests finish. Inside
    an open PlanProgress it draws nothing and advances the plan's one bar instead."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._plan = _PLANS[-1] if _PLANS else None
        self._progress = _bar(8) if enabled and self._plan is None else None
        self._task: TaskID | None = None
        self._failed = 0

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def phase(self, name: str, total: int) -> None:
        self._failed = 0
        if self._progress is not None and total > 0:
            self._task = self._progress.add_task(name, total=total, status="")

    def advance(self, record: RequestRecord) -> None:
        if self._plan is not None:
            self._plan.advance(record)
            return
        if self._progress is None or self._task is None:
            return
        if not record.ok and not record.cancelled:
            self._failed += 1
        ttft = f"ttft {record.ttft_ms:7.1f} ms" if record.ttft_ms is not None else "ttft      -   "
        failed = f"  [red]{self._failed} failed[/]" if self._failed else ""
        self._progress.update(self._task, advance=1, status=ttft + failed)


class StudyProgress(RunProgress):
    """One bar for a whole interleaved study: every arm's warmup and measured requests."""

    def __init__(self, enabled: bool, total: int) -> None:
        super().__init__(enabled)
        super().phase("study", total)

    def phase(self, name: str, total: int) -> None:
        """The arms' phases are inside the study's one bar."""


class PlanProgress:
    """One bar over a plan of runs and studies (the doctor's): while it is open, each run's and
    study's progress advances it, and the plan grows as its steps become known."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._progress = _bar(24) if enabled else None
        self._task = self._progress.add_task("doctor", total=total, status="") if self._progress else None
        self._total = total
        self._done = 0

    def __enter__(self) -> PlanProgress:
        _PLANS.append(self)
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _PLANS.remove(self)
        if self._progress is not None:
            self._progress.stop()

    def step(self, description: str, more: int = 0) -> None:
        """A step begins: its name on the bar, and the requests it adds to the plan."""
        self._total += more
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description, total=self._total)

    def advance(self, record: RequestRecord) -> None:
        self._done += 1
        # A study that adds rounds until it is decided sends more than it planned.
        self._total = max(self._total, self._done)
        if self._progress is not None and self._task is not None:
            ttft = f"ttft {record.ttft_ms:7.1f} ms" if record.ttft_ms is not None else ""
            self._progress.update(self._task, completed=self._done, total=self._total, status=ttft)


# The plans open now, innermost last: RunProgress objects made meanwhile advance it.
_PLANS: list[PlanProgress] = []


def print_arm_line(run_name: str, status: str, metrics: Mapping[str, float], errors: Mapping[str, int]) -> None:
    """An arm of a study in one line: its name, status, TTFT and E2E p50, requests ok and failed."""
    parts = [
        f"{latency.label} p50 {_fmt(metrics[latency.metric('p50')], latency.unit)}"
        for latency in (LATENCY["ttft"], LATENCY["e2e"])
        if latency.metric("p50") in metrics
    ]
    counts = f"{int(metrics.get('requests_ok', 0))} ok, {sum(errors.values())} failed"
    stdout.print(escape(f"  {run_name} [{status}]: {', '.join([*parts, counts])}"), soft_wrap=True)


def summary_table(metrics: Mapping[str, float]) -> Table:
    table = Table(show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("max", justify="right")
    for row in summary_rows(metrics):
        table.add_row(*row)
    return table


def print_summary(summary: RunSummary, output_dir: Path, slo: SloResult | None = None) -> None:
    """A run's closing summary: its name and status, the latency table, the verdict, the counts
    and rates, the SLO line, the warnings, and where its records are."""
    metrics = summary.metrics
    stdout.print(f"[bold]{escape(summary.run_name or '')}[/]  " + escape(f"[{summary.status}]"), soft_wrap=True)
    print_table(summary_table(metrics))
    for line in summary.verdict or ():
        stdout.print(escape(line), soft_wrap=True)
    stdout.print(escape("  ".join(count_parts(metrics, summary.errors or {}))), soft_wrap=True)
    rates = rate_parts(metrics)
    if rates:
        stdout.print("  ".join(rates))
    if slo is not None and slo.any:
        stdout.print(escape(slo_line(slo)), soft_wrap=True)
    for warning in summary.warnings or ():
        stdout.print("[yellow]warning:[/] " + escape(warning), soft_wrap=True)
    stdout.print(escape(f"records: {RunFolder(output_dir).records}"), soft_wrap=True)


def comparison_table(comparison: Comparison) -> Table:
    """metric | baseline | candidate | change | 95% CI | verdict, the objective first and bold."""
    table = Table(
        title=f"{comparison.candidate} vs {comparison.baseline}",
        title_justify="left",
        show_header=True,
        header_style="bold",
    )
    table.add_column("metric")
    for label in (comparison.baseline, comparison.candidate, "change", "95% CI"):
        table.add_column(escape(label), justify="right", overflow="fold")
    table.add_column("verdict")
    colours = {"improved": "green", "worse": "red"}
    for row in comparison.rows:
        name = f"{row.label} ({row.unit})"
        change = "n/a" if row.change_pct is None else f"{row.change_pct:+.1f} {row.change_unit}"
        ci = "-" if row.ci_low is None or row.ci_high is None else f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
        verdict = str(row.verdict)
        shown = f"[{colours[verdict]}]{verdict}[/]" if verdict in colours else verdict
        table.add_row(
            f"[bold]{escape(name)}[/] (objective)" if row.primary else escape(name),
            _fmt(row.baseline, ""),
            _fmt(row.candidate, ""),
            change,
            ci,
            shown,
        )
    return table


def print_study(comparisons: Sequence[Comparison], study_lines: Sequence[str], where: str | None) -> None:
    """A study on one screen: a row per candidate with the objective's change, CI and verdict and
    the other rows that changed significantly; the notes once; where the full tables are."""
    from sentinel_exp.analysis.comparison import ci_header, design_line
    from sentinel_exp.sweep.study import candidate_lines

    if not comparisons:
        return
    first = comparisons[0]
    objective = first.primary.label if first.primary is not None else first.objective
    table = Table(title=f"vs {first.baseline}: {objective}", title_justify="left", header_style="bold")
    table.add_column("candidate", overflow="fold")
    table.add_column("change", justify="right")
    table.add_column(ci_header(first), justify="right")
    table.add_column("verdict", overflow="fold")
    table.add_column("other significant changes", overflow="fold")
    colours = {"improved": "green", "worse": "red"}
    for line in candidate_lines(comparisons):
        verdict = f"[{colours[line.verdict]}]{line.verdict}[/]" if line.verdict in colours else escape(line.verdict)
        table.add_row(escape(line.candidate), line.change, line.ci, verdict, escape(line.also))
    print_table(table)
    notes = list(dict.fromkeys(note for c in comparisons for note in c.notes))
    for text in [design_line(first), *study_lines, *notes]:
        stdout.print("  " + escape(text), soft_wrap=True)
    stdout.print(escape(f"  CI method: {first.method}"), soft_wrap=True)
    if where:
        stdout.print(escape(f"  every metric of every candidate: {where}"), soft_wrap=True)


def print_comparisons(comparisons: Sequence[Comparison]) -> None:
    """The sweep's verdicts: one table per candidate against the baseline, then the notes."""
    for comparison in comparisons:
        print_table(comparison_table(comparison))
        for note in comparison.notes:
            stdout.print("  " + escape(note), soft_wrap=True)
    if comparisons:
        stdout.print(escape(f"  CI method: {comparisons[0].method}"), soft_wrap=True)


def slo_line(slo: SloResult) -> str:
    """Each target with the run's value and its verdict, then the per-request goodput."""
    parts = []
    for v in slo.targets:
        value = "-" if v.value is None else f"{v.value:,.4g}"
        sign = "≤" if v.direction == Direction.minimize else "≥"
        parts.append(f"{v.metric} {value} {sign} {v.limit:g} {'pass' if v.passed else 'FAIL'}")
    line = "SLO: " + ", ".join(parts)
    if slo.requests is not None:
        r = slo.requests
        limits = ", ".join(f"{name} ≤ {limit:g}" for name, limit in r.limits.items())
        share = f" ({100.0 * r.met / r.finished:.1f}%)" if r.finished else ""
        goodput = r.metrics().get("goodput_requests_per_s")
        rate = f", goodput {goodput:.2f} req/s" if goodput is not None else ""
        line += ("; " if parts else "") + f"per request ({limits}): {r.met} of {r.finished} met{share}{rate}"
    return line


def print_sweep_table(jobs: Sequence[tuple[str, Mapping[str, float] | None]]) -> None:
    """Every job of a sweep on one screen (None = the job did not run); MLflow has the rest."""
    table = Table(title="sweep", show_header=True, header_style="bold", title_justify="left")
    table.add_column("job", overflow="fold", min_width=min(30, max(len(name) for name, _ in jobs)))
    for name in SWEEP_COLUMNS:
        table.add_column(describe(name).header, justify="right")
    for name, metrics in jobs:
        if metrics is None:
            table.add_row(escape(name), *["-"] * 5, "[red]not run[/]")
            continue
        table.add_row(
            escape(name),
            _fmt(metrics.get("ttft_ms_p50")),
            _fmt(metrics.get("ttft_ms_p95")),
            _fmt(metrics.get("e2e_ms_p50")),
            _fmt(metrics.get("output_tokens_per_s"), ""),
            f"{int(metrics['cold_starts'])}" if "cold_starts" in metrics else "-",
            f"{int(metrics.get('requests_failed', 0))}",
        )
    print_table(table)
