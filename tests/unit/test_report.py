"""report.py: the markdown of a run and of a sweep, and the artifacts written into a run's folder."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from rich.console import Console

from sentinel_exp.names import RunStatus
from sentinel_exp.report import markdown as report
from sentinel_exp.report.console import summary_table
from sentinel_exp.store.run_folder import RunSummary

METRICS: dict[str, float] = {
    "ttfb_ms_p50": 40.25,
    "ttfb_ms_p95": 61.0,
    "ttfb_ms_max": 70.0,
    "ttft_ms_p50": 1234.56,
    "ttft_ms_p95": 2345.04,
    "ttft_ms_max": 12345.678,
    "itl_ms_p50": 9.95,
    "itl_ms_p95": 14.0,
    "itl_ms_max": 30.0,
    "e2e_ms_p50": 5000.0,
    "e2e_ms_p95": 6000.5,
    "e2e_ms_max": 7000.0,
    "queue_ms_p50": 0.2,
    "queue_ms_p95": 0.4,
    "queue_ms_max": 1.0,
    "requests_ok": 20.0,
    "requests_failed": 3.0,
    "requests_cancelled": 1.0,
    "cold_starts": 2.0,
    "output_tokens_per_s": 45.123,
    "throughput_tokens_per_s": 180.46,
}

WARNING = "arrivals at workload.rate=50/s outran 1 concurrent client(s): raise workload.concurrency"


def summary(**changes: Any) -> RunSummary:
    base: dict[str, Any] = {
        "run_id": "abc123",
        "run_name": "options=low_ctx qwen2.5:0.5b @simulated",
        "status": RunStatus.FINISHED,
        "metrics": METRICS,
        "errors": {"StreamCut": 1, "HTTP500": 2},
        "server": {"kind": "simulated", "url": "http://127.0.0.1:11434"},
        "model": {"tag": "qwen2.5:0.5b", "server_version": "0.5.1"},
        "telemetry_notes": ["GPU telemetry unavailable: no NVIDIA driver installed"],
        "warnings": [WARNING],
    }
    base.update(changes)
    # As the runner hands it over: what summary.json holds, read back.
    return RunSummary.from_json(json.dumps(base, default=str))


def table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def console_rows(metrics: dict[str, float]) -> list[list[str]]:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(summary_table(metrics))
    lines = [ln for ln in console.export_text().splitlines() if ln.startswith("│")]  # body rows, not the header
    return [[cell.strip() for cell in ln.strip("│").split("│")] for ln in lines]


def test_run_report_table_has_the_console_rows_and_numbers():
    md = report.run_report(summary(), [])
    rows = table_rows(md)
    assert rows == [
        ["TTFB", "40.2 ms", "61.0 ms", "70.0 ms"],
        ["TTFT", "1,234.6 ms", "2,345.0 ms", "12,345.7 ms"],
        ["ITL", "9.9 ms", "14.0 ms", "30.0 ms"],
        ["E2E", "5,000.0 ms", "6,000.5 ms", "7,000.0 ms"],
        ["client queue", "0.2 ms", "0.4 ms", "1.0 ms"],
    ]
    assert rows == console_rows(METRICS)


def test_run_report_rows_follow_the_console_for_every_latency():
    every = {latency.metric("p50"): 1000.0 + i for i, latency in enumerate(report.SUMMARY_LATENCIES)}
    every |= {k.replace("_p50", "_p95"): v * 2 for k, v in every.items()}
    assert table_rows(report.run_report(summary(metrics=every), [])) == console_rows(every)


def test_run_report_names_status_counts_rates_warnings_and_notes():
    md = report.run_report(summary(), [])
    assert md.startswith("# options=low_ctx qwen2.5:0.5b @simulated\n")
    assert "status **FINISHED**" in md
    assert "model `qwen2.5:0.5b`" in md
    assert "server simulated at http://127.0.0.1:11434" in md
    assert "MLflow run `abc123`" in md
    assert "requests ok 20 · failed 3 (HTTP500 2, StreamCut 1) · cancelled 1 · cold starts 2" in md
    assert "decode 45.1 tok/s per request (median) · throughput 180.5 tok/s" in md
    warnings = md.split("## Warnings\n\n", 1)[1].split("\n\n", 1)[0]
    assert warnings == f"- {WARNING}"
    assert "## Telemetry notes\n\n- GPU telemetry unavailable: no NVIDIA driver installed\n" in md


def test_run_report_embeds_plots_as_relative_images():
    md = report.run_report(summary(), ["latency_cdf.png", "timeline.png", "extra_plot.png"])
    images = re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", md)
    assert images == [
        ("TTFT and E2E CDFs", "latency_cdf.png"),
        ("Requests and telemetry over time", "timeline.png"),
        ("extra plot", "extra_plot.png"),
    ]
    assert "## Plots" not in report.run_report(summary(), [])


def test_run_report_of_a_run_without_successes_or_extras():
    md = report.run_report(
        summary(
            metrics={"requests_ok": 0.0, "requests_failed": 5.0},
            errors={},
            warnings=[],
            telemetry_notes=[],
            run_id=None,
            status=RunStatus.FAILED,
        ),
        [],
    )
    assert "No successful measured requests: no latency to report." in md
    # No cold_starts metric: no request reported a load_duration, so whether any was cold is unknown.
    assert "requests ok 0 · failed 5 · cold starts: unknown" in md
    assert "tok/s" not in md
    assert "## Warnings" not in md and "## Telemetry notes" not in md
    assert "MLflow run" not in md
    assert "status **FAILED**" in md


def test_markup_in_free_text_is_escaped():
    md = report.run_report(summary(run_name="x*y* [z] <b>", warnings=["see `this` <here>"]), [])
    assert md.startswith("# x\\*y\\* \\[z\\] \\<b\\>\n")
    assert "- see \\`this\\` \\<here\\>" in md
    assert "options=low_ctx" in report.run_report(summary(), [])  # underscores inside words stay


def test_sweep_report():
    table = "| job | TTFT p50 |\n|---|--:|\n| options=low_ctx | 100.0 ms |\n"
    md = report.sweep_report(
        "sweep over options",
        table,
        ["options=low_ctx is faster: TTFT p50 −20.0 ms [−25.1, −14.9]"],
        ["ttft_cdfs.png", "ttft_percentiles.png"],
    )
    assert md.startswith("# sweep over options\n\n| job | TTFT p50 |\n|---|--:|\n| options=low_ctx | 100.0 ms |\n")
    assert "## Verdict\n\n- options=low_ctx is faster: TTFT p50 −20.0 ms [−25.1, −14.9]\n" in md
    assert "![TTFT CDFs by configuration](ttft_cdfs.png)" in md
    assert "![TTFT p50 and p95 by configuration](ttft_percentiles.png)" in md
