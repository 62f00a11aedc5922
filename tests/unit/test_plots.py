"""plots.py: figures checked through their artists (axes, scales, labels, lines, legends, spans,
error bars). tests/integration/test_figures_on_disk.py renders one PNG of each kind for real."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from support.run_data import T_START, record, run_records, samples

import sentinel_exp
from sentinel_exp.names import Phase
from sentinel_exp.report import plots
from sentinel_exp.report.plots import BarRow


def legend_texts(ax: object) -> list[str]:
    legend = ax.get_legend()  # type: ignore[attr-defined]
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def labelled_lines(ax: object) -> list[object]:
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]  # type: ignore[attr-defined]


def assert_cdf(y: np.ndarray) -> None:
    assert y[0] == pytest.approx(0.0)
    assert y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(y) >= 0)


# -- latency_cdfs ---------------------------------------------------------------------------------


def test_latency_cdfs_two_log_axes_of_successful_measured_requests():
    records = run_records(warmup=3, measured=20, failed=2)
    fig = plots.latency_cdfs(records, "options=low_ctx @simulated")
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == "options=low_ctx @simulated"
    ax_ttft, ax_e2e = fig.axes
    assert [ax_ttft.get_title(), ax_e2e.get_title()] == ["TTFT", "E2E latency"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert "(ms" in ax.get_xlabel()
        assert ax.get_ylabel()
    assert ax_ttft.get_xlabel().startswith("TTFT")
    assert ax_e2e.get_xlabel().startswith("E2E")

    cdf = ax_ttft.get_lines()[0]
    x, y = np.asarray(cdf.get_xdata()), np.asarray(cdf.get_ydata())
    assert_cdf(y)
    # 20 measured successes only: warmup (TTFT >= 500) and failed (TTFT 50) are left out.
    assert len(y) == 21
    assert x.min() == 100.0 and x.max() == 119.0
    assert np.all(np.diff(x) >= 0)
    e2e = np.asarray(ax_e2e.get_lines()[0].get_xdata())
    assert e2e.min() == 300.0 and e2e.max() == 338.0


def test_latency_cdfs_mark_p50_and_p95_as_the_summary_computes_them():
    records = run_records(warmup=0, measured=20, failed=0)
    fig = plots.latency_cdfs(records, "t")
    ax = fig.axes[0]
    p50, p95 = np.percentile([100.0 + i for i in range(20)], [50, 95])
    texts = legend_texts(ax)
    assert texts == ["CDF (n = 20)", f"p50 {p50:,.1f} ms", f"p95 {p95:,.1f} ms"]
    vertical = [ln for ln in ax.get_lines() if ln.get_label().startswith("p")]
    assert [ln.get_xdata()[0] for ln in vertical] == pytest.approx([p50, p95])


def test_legend_sits_in_the_corner_the_curve_leaves_empty():
    # A slow tail puts the median left of the middle: the lower right is empty. A fast outlier
    # stretches the axis leftwards: the upper left is.
    slow_tail = [record(i, ttft=100.0 + i, e2e=100.0 + i) for i in range(19)] + [record(19, ttft=5000.0, e2e=5000.0)]
    fast_outlier = [record(0, ttft=1.0, e2e=1.0)] + [record(i, ttft=500.0 + i, e2e=500.0 + i) for i in range(1, 20)]
    assert legend_box(plots.latency_cdfs(slow_tail, "t")) == ("right", "lower")
    assert legend_box(plots.latency_cdfs(fast_outlier, "t")) == ("left", "upper")


def legend_box(fig: Figure) -> tuple[str, str]:
    """Which half of the first axes, across and up, the drawn legend lies in."""
    fig.draw_without_rendering()
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent().transformed(ax.transAxes.inverted())
    across = "left" if box.x1 < 0.5 else "right" if box.x0 > 0.5 else "middle"
    up = "lower" if box.y1 < 0.5 else "upper" if box.y0 > 0.5 else "middle"
    return across, up


def test_long_run_names_wrap_instead_of_leaving_the_figure():
    # Run names are cut at 250 characters (run/context.py RunContext.run_name).
    name = " ".join(f"workload.setting_{i}=value_{i}" for i in range(8)) + " qwen2.5:0.5b @simulated"
    assert len(name) <= 250
    title = plots.latency_cdfs(run_records(), name).get_suptitle()
    assert title.replace("\n", " ") == name
    assert len(title.splitlines()) == 3
    assert max(len(line) for line in title.splitlines()) <= 100


def test_latency_cdfs_without_successes_say_so():
    records = [record(0, ok=False), record(1, Phase.WARMUP)]
    fig = plots.latency_cdfs(records, "all failed")
    for ax in fig.axes:
        assert ax.get_lines() == []
        assert [t.get_text() for t in ax.texts] == ["no successful measured requests"]
        assert ax.get_xscale() == "log"


# -- overlaid_cdfs --------------------------------------------------------------------------------


def test_overlaid_cdfs_one_line_per_configuration_named_in_the_legend():
    arms = {
        "options=low_ctx": run_records(warmup=2, measured=10, failed=1),
        "options=high_ctx": [record(i, ttft=200.0 + 5 * i) for i in range(15)],
        "workload.concurrency=4": [record(i, ttft=50.0 + i) for i in range(7)],
    }
    fig = plots.overlaid_cdfs(arms)
    (ax,) = fig.axes
    lines = labelled_lines(ax)
    assert [ln.get_label() for ln in lines] == list(arms)  # type: ignore[attr-defined]
    assert legend_texts(ax) == list(arms)
    assert [len(ln.get_ydata()) - 1 for ln in lines] == [10, 15, 7]  # type: ignore[attr-defined]
    for ln in lines:
        assert_cdf(np.asarray(ln.get_ydata()))  # type: ignore[attr-defined]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "TTFT (ms, log scale)"
    assert ax.get_ylabel()
    assert fig.get_suptitle() == "TTFT by configuration"
    assert len({ln.get_color() for ln in lines}) == 3  # type: ignore[attr-defined]


def test_overlaid_cdfs_other_metric_and_many_configurations():
    arms = {f"workload.concurrency={c}": [record(i, e2e=100.0 * c + i) for i in range(5)] for c in range(1, 13)}
    fig = plots.overlaid_cdfs(arms, metric="e2e", title="E2E by concurrency")
    (ax,) = fig.axes
    assert fig.get_suptitle() == "E2E by concurrency"
    assert ax.get_xlabel() == "E2E latency (ms, log scale)"
    assert legend_texts(ax) == list(arms)
    assert len({ln.get_color() for ln in labelled_lines(ax)}) == 12  # type: ignore[attr-defined]
    first = np.asarray(labelled_lines(ax)[0].get_xdata())  # type: ignore[attr-defined]
    assert first.min() == 100.0 and first.max() == 104.0


# -- percentile_bars ------------------------------------------------------------------------------


def test_percentile_bars_with_confidence_whiskers():
    rows = [
        BarRow("options=low_ctx", p50=100.0, p95=180.0, p50_ci=(95.0, 108.0), p95_ci=(170.0, 200.0)),
        BarRow("options=high_ctx", p50=150.0, p95=260.0, p50_ci=(140.0, 155.0), p95_ci=(250.0, 300.0)),
    ]
    fig = plots.percentile_bars(rows)
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [[p.get_width() for p in c.patches] for c in bars] == [[100.0, 150.0], [180.0, 260.0]]
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 2
    # Whisker ends are the CI bounds: (x_low, x_high) of each segment.
    p50_whiskers = errorbars[0].lines[2][0].get_segments()
    assert [v for s in p50_whiskers for v in (s[0][0], s[1][0])] == pytest.approx([95.0, 108.0, 140.0, 155.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["options=low_ctx", "options=high_ctx"]
    assert ax.get_xlabel() == "TTFT (ms)"
    assert ax.get_ylabel() == "configuration"
    assert legend_texts(ax) == ["p50", "p95"]
    assert fig.get_suptitle() == "TTFT p50 and p95 by configuration"
    assert ax.get_title(loc="right") == "whiskers: 95 % CI"


def test_percentile_bars_without_intervals_have_no_whiskers():
    fig = plots.percentile_bars([BarRow("a", 1.0, 2.0), BarRow("b", 3.0, 4.0)], metric="e2e")
    (ax,) = fig.axes
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len([c for c in ax.containers if isinstance(c, BarContainer)]) == 2
    assert ax.get_xlabel() == "E2E latency (ms)"
    assert ax.get_title(loc="right") == ""


# -- timeline -------------------------------------------------------------------------------------


def warmup_spans(ax: object) -> list[object]:
    return [p for p in ax.patches if p.get_gid() == "warmup"]  # type: ignore[attr-defined]


def test_timeline_with_gpu_has_four_panels_on_one_time_axis():
    records = run_records(warmup=3, measured=20, failed=2)
    fig = plots.timeline(records, samples(150, gpu=True), "run")
    assert fig.get_suptitle() == "run"
    assert len(fig.axes) == 4
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "request (1 = first sent, warmup included)",
        "CPU (%)",
        "GPU util (%)",
        "GPU power (W)",
    ]
    assert fig.axes[-1].get_xlabel() == "time since run start (s)"
    shared = fig.axes[0].get_shared_x_axes()
    assert all(shared.joined(fig.axes[0], ax) for ax in fig.axes[1:])
    assert legend_texts(fig.axes[1]) == ["host (% of all cores)", "server (100 % = 1 core)", "client (100 % = 1 core)"]
    assert legend_texts(fig.axes[2]) == ["GPU 0"]
    power = fig.axes[3].get_lines()[0]
    assert set(power.get_ydata()) == {250.0}


def test_timeline_segments_span_submit_to_last_chunk_and_tick_the_first_token():
    r = record(0, ttft=200.0, e2e=1500.0, started_at=T_START + 2.0, queue_ms=100.0)
    fig = plots.timeline([r], samples(40, gpu=False), "one")
    ax = fig.axes[0]
    (collection,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    (segment,) = collection.get_segments()
    origin = T_START + 0.1  # the first sample came before the request
    assert segment[0][0] == pytest.approx(2.0 - 0.1)
    assert segment[1][0] == pytest.approx(2.0 - 0.1 + 0.1 + 1.5)  # queue then E2E from t0
    ticks = [c for c in ax.collections if c.get_label() == "first token"]
    (offset,) = ticks[0].get_offsets()
    assert offset[0] == pytest.approx(T_START + 2.0 + 0.1 + 0.2 - origin)


def test_timeline_colours_warmup_measured_and_failed_apart_and_shades_warmup_everywhere():
    records = run_records(warmup=3, measured=5, failed=2)
    fig = plots.timeline(records, samples(60, gpu=False), "run")
    assert len(fig.axes) == 2  # requests and CPU: no GPU panels without GPU readings
    ax = fig.axes[0]
    counts = {c.get_label(): len(c.get_segments()) for c in ax.collections if isinstance(c, LineCollection)}
    assert counts == {"warmup request": 3, "measured request": 5, "failed request": 2}
    colours = {c.get_label(): tuple(c.get_colors()[0]) for c in ax.collections if isinstance(c, LineCollection)}
    assert len(set(colours.values())) == 3
    for panel in fig.axes:
        (span,) = warmup_spans(panel)
        x0, x1 = span.get_x(), span.get_x() + span.get_width()  # type: ignore[attr-defined]
        # Warmup ran from the first warmup submit (1.0 s after T_START, 0.9 s after the first
        # sample) to the end of the third: submitted at +2.0 s, 0.5 ms queue, 900 ms E2E.
        assert [x0, x1] == pytest.approx([0.9, 1.9 + 0.0005 + 0.9])
    assert "warmup phase" in legend_texts(ax)


def test_timeline_numbers_requests_as_the_console_and_the_scripted_faults_do_and_marks_cold_ones():
    records = run_records(warmup=2, measured=4, failed=0)
    records[2].cold = True  # the first measured request: request 3 of the run
    ax = plots.timeline(records, [], "run").axes[0]
    rows = sorted(y for c in ax.collections if isinstance(c, LineCollection) for (_, y), _ in c.get_segments())
    assert rows == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # 1-based, warmup first: server.sim.faults={3: ...} is the 3rd
    [cold] = [c for c in ax.collections if c.get_label() == "cold (model loaded)"]
    assert [tuple(xy) for xy in cold.get_offsets()] == [(pytest.approx(1.0), 3.0)]  # submitted 1.0 s in
    assert "cold (model loaded)" in legend_texts(ax)


def test_timeline_without_warmup_has_no_shading():
    fig = plots.timeline(run_records(warmup=0), samples(20), "run")
    assert all(warmup_spans(ax) == [] for ax in fig.axes)


def test_timeline_takes_warmup_from_sample_phases_when_no_warmup_request_was_kept():
    # Samples 10..19 (t = 1.1..2.0 s) carry the warmup phase: the phase began between samples
    # 9 and 10 and ended between 19 and 20.
    fig = plots.timeline(run_records(warmup=0), samples(50, warmup=range(10, 20)), "run")
    for ax in fig.axes:
        (span,) = warmup_spans(ax)
        x0, x1 = span.get_x(), span.get_x() + span.get_width()  # type: ignore[attr-defined]
        assert [x0, x1] == pytest.approx([0.95, 1.95])


def test_timeline_without_telemetry_or_requests():
    fig = plots.timeline(run_records(), [], "telemetry off")
    assert len(fig.axes) == 1
    assert fig.axes[0].get_xlim()[0] == 0.0
    empty = plots.timeline([], [], "nothing")
    assert len(empty.axes) == 1
    assert [t.get_text() for t in empty.axes[0].texts] == ["no requests recorded"]
    cpu_only = plots.timeline([], samples(10, gpu=False), "samples only")
    assert [ax.get_ylabel() for ax in cpu_only.axes] == ["request (1 = first sent, warmup included)", "CPU (%)"]


def test_importing_the_modules_does_not_import_matplotlib(monkeypatch):
    # matplotlib takes about a second to import: a run must not pay it before it measures.
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now fails
    for name in ("sentinel_exp.report.plots", "sentinel_exp.report.markdown"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.delattr(sentinel_exp, name.rsplit(".", 1)[1], raising=False)
        module = importlib.import_module(name)
        assert module.__name__ == name


# -- ladder ---------------------------------------------------------------------------------------


def test_a_ladder_is_a_line_over_its_rungs_with_whiskers_and_the_configuration_as_given_ringed():
    points = [
        plots.LadderPoint(160.0, 90.0, 85.0, 96.0, given=True),
        plots.LadderPoint(40.0, 30.0, 27.0, 34.0),
        plots.LadderPoint(80.0, 50.0, 46.0, 55.0),
    ]
    fig = plots.ladder(points, "prompt tokens", "TTFT p50 (ms), 95% CI", "prefill of long prompts")
    [ax] = fig.axes
    [errorbar] = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    line = errorbar.lines[0]
    assert list(line.get_xdata()) == [40.0, 80.0, 160.0]  # in the axis' order, whatever the given order
    assert list(line.get_ydata()) == [30.0, 50.0, 90.0]
    [ring] = [ln for ln in ax.get_lines() if ln.get_label() == "as given"]
    assert (list(ring.get_xdata()), ring.get_linestyle()) == ([160.0], "None")
    assert set(legend_texts(ax)) == {"95% CI", "p50", "as given"}
    assert ax.get_xlabel() == "prompt tokens" and ax.get_ylim()[0] == 0
    assert isinstance(plots.ladder([], "x", "y", "none"), Figure)
