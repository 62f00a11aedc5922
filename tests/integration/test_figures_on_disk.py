"""Figures and reports written to disk for real: one PNG of each kind through matplotlib's Agg
backend, and the artifacts of a run and of a sweep. (Rendering costs about a second a figure, so
these sit with the slow tests; tests/unit/test_plots.py checks the figures through their artists.)"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from support.run_data import run_records, samples

from sentinel_exp.names import Phase, RunStatus
from sentinel_exp.records import RequestRecord
from sentinel_exp.report import markdown as report
from sentinel_exp.report import plots
from sentinel_exp.report.plots import BarRow
from sentinel_exp.store.run_folder import RunSummary
from sentinel_exp.telemetry.sampler import Sample


def summary() -> RunSummary:
    return RunSummary.from_dict(
        {
            "run_id": "abc123",
            "run_name": "options=low_ctx qwen2.5:0.5b @simulated",
            "status": RunStatus.FINISHED,
            "metrics": {"ttft_ms_p50": 81.5, "ttft_ms_p95": 90.0, "ttft_ms_max": 91.0, "requests_ok": 10.0},
            "errors": {},
            "server": {"kind": "simulated", "url": "http://127.0.0.1:11434"},
            "model": {"tag": "qwen2.5:0.5b"},
            "telemetry_notes": [],
            "warnings": [],
        }
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("name", "make", "size_in"),
    [
        ("latency_cdf", lambda: plots.latency_cdfs(run_records(), "cdf"), (11.0, 4.2)),
        ("timeline", lambda: plots.timeline(run_records(), samples(100), "timeline"), (11.0, 8.1)),
        ("overlaid", lambda: plots.overlaid_cdfs({"a": run_records(), "b": run_records(measured=5)}), (8.0, 4.8)),
        ("bars", lambda: plots.percentile_bars([BarRow("a", 1.0, 2.0, (0.5, 1.5), (1.5, 3.0))]), (8.0, 2.15)),
    ],
)
def test_each_figure_renders_a_png(tmp_path, name, make, size_in):
    path = plots.save_png(make(), tmp_path / f"{name}.png")
    assert path == tmp_path / f"{name}.png"
    assert png_size(path) == (round(size_in[0] * plots.PNG_DPI), round(size_in[1] * plots.PNG_DPI))
    assert 10_000 < path.stat().st_size < 1_000_000


def records_and_samples() -> tuple[list[RequestRecord], list[Sample]]:
    t0 = 1_700_000_000.0
    records = [
        RequestRecord(
            index=i,
            phase=Phase.WARMUP if i < 2 else Phase.MEASURED,
            prompt_index=0,
            api="chat",
            ok=True,
            started_at=t0 + 0.3 * i,
            queue_ms=0.5,
            ttft_ms=80.0 + i,
            e2e_ms=250.0 + 3 * i,
            chunk_times_ms=[80.0 + i, 250.0 + 3 * i],
        )
        for i in range(12)
    ]
    samples = [
        Sample(i, t0 + 0.1 * i, 0.1 * i, Phase.MEASURED, 20.0, 50.0, 1e3, 10.0, 90.0, 300.0, 15.0) for i in range(40)
    ]
    return records, samples


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_write_run_artifacts(tmp_path):
    records, samples = records_and_samples()
    paths = report.write_run_artifacts(tmp_path, records, samples, summary())
    assert paths == [tmp_path / "latency_cdf.png", tmp_path / "timeline.png", tmp_path / "report.md"]
    assert is_png(paths[0]) and is_png(paths[1])
    md = paths[2].read_text(encoding="utf-8")
    assert md == report.run_report(summary(), ["latency_cdf.png", "timeline.png"])
    for _, link in re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", md):
        assert (tmp_path / link).is_file()


def test_write_sweep_report(tmp_path):
    records, _ = records_and_samples()
    arms = {"options=low_ctx": records, "options=high_ctx": records[:6]}
    rows = [BarRow("options=low_ctx", 90.0, 95.0), BarRow("options=high_ctx", 85.0, 87.0)]
    out = tmp_path / "sweep"
    paths = report.write_sweep_report(
        out, report.SweepText("sweep", "| a |\n|---|\n| 1 |", ["no difference"]), arms, rows
    )
    assert paths == [out / "ttft_cdfs.png", out / "ttft_percentiles.png", out / "report.md"]
    assert is_png(paths[0]) and is_png(paths[1])
    assert "![TTFT CDFs by configuration](ttft_cdfs.png)" in paths[2].read_text(encoding="utf-8")
    no_rows = report.write_sweep_report(tmp_path / "e2e", report.SweepText("sweep", "", []), arms, [], metric="e2e")
    assert [p.name for p in no_rows] == ["e2e_cdfs.png", "report.md"]
