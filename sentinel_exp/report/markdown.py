"""report.md for a run or a sweep: pure functions from the summary to markdown, and
`write_run_artifacts` to put the figures and the report into a run's folder.

The report says what the console summary says (the same rows, numbers formatted alike), with the
figures of `sentinel_exp.report.plots` embedded by relative links, so the folder can be read as it is or
from MLflow's artifact view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# plots imports matplotlib only inside its functions: importing it here costs nothing.
from sentinel_exp.analysis.metrics import LATENCIES, METRICS, OUTPUT_TOKENS, Metric, axis_label
from sentinel_exp.report.plots import BarRow
from sentinel_exp.store.run_folder import RunFolder, RunSummary

if TYPE_CHECKING:
    from sentinel_exp.records import RequestRecord
    from sentinel_exp.telemetry.sampler import Sample

# The rows of the summary table, in the console (console.summary_table) and in report.md: the
# latencies, then rows in other units with the metric in each column (p50, p95, max).
SUMMARY_LATENCIES = tuple(latency for latency in LATENCIES if latency.in_summary)
OTHER_ROWS: tuple[tuple[Metric, tuple[str | None, str | None, str | None]], ...] = (
    (OUTPUT_TOKENS, ("output_tokens_p50", "output_tokens_p95", "output_tokens_max")),
    (METRICS["prefill_tokens_per_s"], ("prefill_tokens_per_s", None, None)),
)

# Alt text of the figures write_run_artifacts writes; any other image is named by its file.
PLOT_CAPTIONS: Mapping[str, str] = {
    RunFolder.LATENCY_CDF: "TTFT and E2E CDFs",
    RunFolder.TIMELINE: "Requests and telemetry over time",
}

# What could turn free text (a run name, a warning) into markup: emphasis, code, links, HTML.
# `_` inside a word (`low_ctx`, `queue_ms`) is no emphasis in CommonMark and is left as written.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>])")


def md_escape(text: str) -> str:
    """Free text that markdown shows as written."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def fmt_ms(value: float | None, unit: str = "ms") -> str:
    """A number as the console prints it: thousands separated, one decimal, `-` when absent."""
    if value is None:
        return "-"
    return f"{value:,.1f} {unit}" if unit else f"{value:,.1f}"


def summary_rows(metrics: Mapping[str, float]) -> list[tuple[str, str, str, str]]:
    """label, p50, p95, max of each row the run has: the console's summary table and report.md's."""
    rows = [
        (
            latency.label,
            fmt_ms(metrics.get(latency.metric("p50")), latency.unit),
            fmt_ms(metrics.get(latency.metric("p95")), latency.unit),
            fmt_ms(metrics.get(latency.metric("max")), latency.unit),
        )
        for latency in SUMMARY_LATENCIES
        if latency.metric("p50") in metrics
    ]
    if rows:
        for metric, names in OTHER_ROWS:
            if names[0] in metrics:
                p50, p95, top = (fmt_ms(metrics.get(n) if n else None, metric.unit) for n in names)
                rows.append((metric.label, p50, p95, top))
    return rows


def summary_table_md(metrics: Mapping[str, float]) -> str:
    """p50/p95/max of each latency the run has, as the console's summary table."""
    lines = ["| metric | p50 | p95 | max |", "|---|--:|--:|--:|"]
    for row in summary_rows(metrics):
        lines.append("| " + " | ".join(row) + " |")
    if len(lines) == 2:
        return "No successful measured requests: no latency to report."
    return "\n".join(lines)


def count_parts(metrics: Mapping[str, float], errors: Mapping[str, int]) -> list[str]:
    """`requests ok N`, `failed N (classes)`, `cancelled N`, `cold starts N`: the console's line too."""
    ok = int(metrics.get("requests_ok", 0))
    failed = int(metrics.get("requests_failed", 0))
    parts = [f"requests ok {ok}", f"failed {failed}"]
    if errors:
        parts[-1] += " (" + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) + ")"
    if metrics.get("requests_cancelled"):
        parts.append(f"cancelled {int(metrics['requests_cancelled'])}")
    # No cold_starts metric: the server reports no load_duration, so nobody can tell.
    parts.append(f"cold starts {int(metrics['cold_starts'])}" if "cold_starts" in metrics else "cold starts: unknown")
    return parts


def rate_parts(metrics: Mapping[str, float]) -> list[str]:
    rates = []
    if "output_tokens_per_s" in metrics:
        rates.append(f"decode {metrics['output_tokens_per_s']:.1f} tok/s per request (median)")
    if "throughput_tokens_per_s" in metrics:
        rates.append(f"throughput {metrics['throughput_tokens_per_s']:.1f} tok/s")
    return rates


def counts_line(metrics: Mapping[str, float], errors: Mapping[str, int]) -> str:
    return md_escape(" · ".join(count_parts(metrics, errors)))


def rates_line(metrics: Mapping[str, float]) -> str | None:
    return " · ".join(rate_parts(metrics)) or None


def image_links(plots: Sequence[str]) -> list[str]:
    """Markdown images for figures next to the report (paths relative to it)."""
    out = []
    for plot in plots:
        name = Path(plot).name
        caption = PLOT_CAPTIONS.get(name) or _sweep_caption(Path(plot).stem)
        out.append(f"![{caption}]({Path(plot).as_posix()})")
    return out


def _sweep_caption(stem: str) -> str:
    metric, _, kind = stem.rpartition("_")
    label = axis_label(metric)
    if kind == "cdfs":
        return f"{label} CDFs by configuration"
    if kind == "percentiles":
        return f"{label} p50 and p95 by configuration"
    return stem.replace("_", " ")


def _bullets(items: Sequence[object]) -> list[str]:
    return [f"- {md_escape(str(item))}" for item in items]


def _run_facts(summary: RunSummary) -> str:
    facts = [f"status **{md_escape(str(summary.status or 'unknown'))}**"]
    model = summary.model
    if isinstance(model, Mapping) and model.get("tag"):
        facts.append(f"model `{model['tag']}`")
    server = summary.server
    if server is not None and server.kind:
        where = f" at {server.url}" if server.url else ""
        facts.append(f"server {md_escape(str(server.kind))}{md_escape(where)}")
    if summary.run_id:
        facts.append(f"MLflow run `{summary.run_id}`")
    return " · ".join(facts)


def run_report(summary: RunSummary, plots: Sequence[str]) -> str:
    """report.md of one run, from what summary.json holds (run/conclusion.py writes it)."""
    metrics = summary.metrics
    errors = summary.errors or {}
    name = str(summary.run_name or summary.run_id or "run")
    lines = [f"# {md_escape(name)}", "", _run_facts(summary), "", "## Latency", "", summary_table_md(metrics), ""]
    verdict = summary.verdict or ()
    if verdict:
        lines += [*_bullets(verdict), ""]
    lines += [counts_line(metrics, errors), ""]
    rates = rates_line(metrics)
    if rates:
        lines += [rates, ""]
    warnings = summary.warnings or ()
    if warnings:
        lines += ["## Warnings", "", *_bullets(warnings), ""]
    notes = summary.telemetry_notes or ()
    if notes:
        lines += ["## Telemetry notes", "", *_bullets(notes), ""]
    if plots:
        lines += ["## Plots", ""]
        for link in image_links(plots):
            lines += [link, ""]
    return "\n".join(lines).rstrip() + "\n"


def sweep_report(title: str, table_markdown: str, verdict_lines: Sequence[str], plots: Sequence[str]) -> str:
    """report.md of a sweep: the compare table (markdown made elsewhere), the verdicts, the plots."""
    lines = [f"# {md_escape(title)}", "", table_markdown.strip(), ""]
    if verdict_lines:
        lines += ["## Verdict", "", *(f"- {line}" for line in verdict_lines), ""]
    if plots:
        lines += ["## Plots", ""]
        for link in image_links(plots):
            lines += [link, ""]
    return "\n".join(lines).rstrip() + "\n"


def write_run_artifacts(
    output_dir: Path, records: Sequence[RequestRecord], samples: Sequence[Sample], summary: RunSummary
) -> list[Path]:
    """latency_cdf.png, timeline.png and report.md in the run's folder; returns their paths for
    the tracker to log. Call it after the measurement: it imports matplotlib (about a second)."""
    from sentinel_exp.report import plots

    folder = RunFolder(Path(output_dir))
    title = str(summary.run_name or "run")
    cdf = plots.latency_cdfs(records, title)
    written = [plots.save_png(cdf, folder.latency_cdf)]
    written.append(plots.save_png(plots.timeline(records, samples, title), folder.timeline))
    report = folder.report
    report.write_text(run_report(summary, [p.name for p in written]), encoding="utf-8")
    return [*written, report]


@dataclass(frozen=True)
class SweepText:
    """The words of a sweep's report.md: its title, the compare table (markdown made elsewhere)
    and a verdict line per configuration."""

    title: str
    table_markdown: str
    verdict_lines: Sequence[str]


def write_sweep_report(
    output_dir: Path,
    text: SweepText,
    arms: Mapping[str, Sequence[RequestRecord]],
    rows: Sequence[BarRow],
    metric: str = "ttft",
) -> list[Path]:
    """`<metric>_cdfs.png`, `<metric>_percentiles.png` (when there are `rows`) and
    report.md of a sweep in `output_dir`; returns their paths."""
    from sentinel_exp.report import plots

    folder = RunFolder(Path(output_dir))
    folder.path.mkdir(parents=True, exist_ok=True)
    written = [plots.save_png(plots.overlaid_cdfs(arms, metric), folder.sweep_cdfs(metric))]
    if rows:
        written.append(plots.save_png(plots.percentile_bars(rows, metric), folder.sweep_percentiles(metric)))
    report = folder.report
    names = [p.name for p in written]
    report.write_text(sweep_report(text.title, text.table_markdown, text.verdict_lines, names), encoding="utf-8")
    return [*written, report]
