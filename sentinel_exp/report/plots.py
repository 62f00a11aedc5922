"""Figures of one run and of a sweep: pure functions from records and samples to matplotlib
Figures, and `save_png` to write one.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot: no GUI backend is
chosen, no global figure registry grows, and PNGs render through Agg whatever the environment
says. matplotlib is imported inside the functions: importing it costs about a second, which a run
must not pay before it measures.

Latency statistics come from `sentinel_exp.analysis.stats`, so a percentile marked on a plot is the number
in the summary: successful requests of the measured phase only (see docs/measurement.md, Metrics).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sentinel_exp.analysis.metrics import axis_label
from sentinel_exp.analysis.stats import describe, latency_samples
from sentinel_exp.names import Phase
from sentinel_exp.records import request_numbers

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sentinel_exp.records import RequestRecord
    from sentinel_exp.telemetry.sampler import Sample

PNG_DPI = 150
# More series than this and a legend inside the axes would hide curves: it goes beside them.
_LEGEND_INSIDE_MAX = 5

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and in greyscale.
_MEASURED = "#0072B2"
_WARMUP = "#8C8C8C"  # grey: warmup requests count for nothing
_FAILED = "#D55E00"
_FIRST_TOKEN = "#1A1A1A"
_COLD = "#CC79A7"
_SHADE = "#E69F00"
_P95 = "#E69F00"
_CPU_COLOURS = ("#0072B2", "#009E73", "#CC79A7", "#999999")
# Tick multiples per decade for a log ms axis, sparsest first.
_TICK_SUBS: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (1.0, 2.0, 5.0),
    (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
    tuple(float(s) for s in range(1, 10)),
)
_SERIES = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


@dataclass(frozen=True)
class BarRow:
    """One configuration of a sweep: percentiles of one metric in ms, with (low, high) confidence
    intervals where the caller has them."""

    name: str
    p50: float
    p95: float
    p50_ci: tuple[float, float] | None = None
    p95_ci: tuple[float, float] | None = None


@contextmanager
def _style() -> Iterator[None]:
    """rcParams are read when artists are created, so figures are built inside this context; it
    is restored on exit, and no setting leaks into the caller's matplotlib."""
    import matplotlib

    with matplotlib.rc_context(
        {
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "figure.titlesize": 13,
            "figure.titleweight": "bold",
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "legend.fontsize": 9,
            # A framed legend keeps its text readable where it has to sit over a curve.
            "legend.frameon": True,
            "legend.framealpha": 0.9,
            "legend.edgecolor": "0.85",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.35,
            "grid.linewidth": 0.6,
            "axes.axisbelow": True,
            "figure.facecolor": "white",
            "axes.facecolor": "white",
        }
    ):
        yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _suptitle(fig: Figure, title: str) -> None:
    """Run names grow with every override (`workload.requests=200 server.sim.parallel=2 ...`):
    wrapped to the figure's width, never cut off at its edges."""
    import textwrap

    # A bold 13 pt character is about 8.5 pt wide on average.
    chars = max(20, int(fig.get_figwidth() * 72 / 8.5 * 0.92))
    fig.suptitle("\n".join(textwrap.wrap(title, chars)) or title)


def save_png(fig: Figure, path: Path | str) -> Path:
    """Write `fig` as a PNG (through Agg, whatever the matplotlib backend) and return the path."""
    out = Path(path)
    # No "Software" entry: the same figure gives the same bytes whatever matplotlib wrote it.
    fig.savefig(out, format="png", dpi=PNG_DPI, facecolor="white", metadata={"Software": None})
    return out


# -- CDFs ---------------------------------------------------------------------------------------


def _ecdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Points of the empirical CDF as a post-step curve from 0 to 1. Non-positive values are
    dropped: they have no place on a log axis, and no latency is 0 ms."""
    xs = sorted(v for v in values if v > 0)
    if not xs:
        return [], []
    n = len(xs)
    return [xs[0], *xs], [0.0, *((i + 1) / n for i in range(n))]


def _log_ms_axis(ax: Axes, lo: float, hi: float) -> None:
    """A log x axis in ms with plain-number ticks. Latencies often span less than a decade, where
    ticks at powers of ten alone would leave one label or none: the sparsest tick set that still
    puts four ticks inside the data's range is used."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = max(lo, 1e-3), max(hi, lo * 1.01)
    left, right = lo / 1.2, hi * 1.2
    # Limits before the scale: autoscaling a single value on a log axis warns of a singular range.
    ax.set_xlim(left, right)
    ax.set_xscale("log")
    chosen = _TICK_SUBS[-1]
    for subs in _TICK_SUBS:
        first, last = math.floor(math.log10(left)), math.ceil(math.log10(right))
        inside = [s * 10.0**d for d in range(first, last + 1) for s in subs if left <= s * 10.0**d <= right]
        if len(inside) >= 4:
            chosen = subs
            break
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=chosen, numticks=30))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _empty_corner(ax: Axes, medians: Sequence[float]) -> Literal["upper left", "lower right", "best"]:
    """Where a legend hides no CDF: a CDF never enters the area left of its median above 0.5,
    nor the area right of it below 0.5; the larger of the two (on the log axis) takes the legend.
    Curves that disagree leave it to matplotlib to find room."""
    left, right = (math.log10(v) for v in ax.get_xlim())
    where = [(math.log10(m) - left) / (right - left) for m in medians if m > 0]
    if where and min(where) > 0.5:
        return "upper left"
    if where and max(where) <= 0.5:
        return "lower right"
    return "best"


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xlim(1, 1000)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)


def _cdf_axes(ax: Axes, values: Sequence[float], metric: str, colour: str) -> None:
    label = axis_label(metric)
    ax.set_title(label)
    ax.set_xlabel(f"{label} (ms, log scale)")
    ax.set_ylabel("fraction of requests ≤ x")
    xs, ys = _ecdf(values)
    if not xs:
        _no_data(ax, "no successful measured requests")
        return
    ax.plot(xs, ys, drawstyle="steps-post", color=colour, linewidth=1.8, label=f"CDF (n = {len(xs) - 1})")
    stats = describe(xs[1:])  # xs repeats its first point, where the curve leaves 0
    for q, style in (("p50", "--"), ("p95", ":")):
        value = stats[q]
        ax.axvline(value, color="0.25", linestyle=style, linewidth=1.1, label=f"{q} {value:,.1f} ms")
        ax.plot([value], [int(q[1:]) / 100], marker="o", markersize=4, color="0.25", label="_nolegend_")
    _log_ms_axis(ax, xs[0], xs[-1])
    ax.set_ylim(0, 1.02)
    ax.legend(loc=_empty_corner(ax, [stats["p50"]]))


def latency_cdfs(records: Sequence[RequestRecord], title: str) -> Figure:
    """Empirical CDFs of TTFT and E2E side by side (successful measured requests), p50 and p95
    marked."""
    samples = latency_samples(records)
    with _style():
        fig = _figure(11.0, 4.2)
        ax_ttft, ax_e2e = fig.subplots(1, 2)
        _cdf_axes(ax_ttft, samples["ttft"], "ttft", _MEASURED)
        _cdf_axes(ax_e2e, samples["e2e"], "e2e", "#009E73")
        _suptitle(fig, title)
    return fig


def _series_colours(n: int) -> list[str]:
    if n <= len(_SERIES):
        return list(_SERIES[:n])
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["viridis"]
    return [to_hex(cmap(i / max(n - 1, 1))) for i in range(n)]


def overlaid_cdfs(
    arms: Mapping[str, Sequence[RequestRecord]], metric: str = "ttft", title: str | None = None
) -> Figure:
    """One CDF of `metric` (a key of `stats.latency_samples`) per configuration of a sweep; the
    legend names each configuration as given (`options=low_ctx`)."""
    label = axis_label(metric)
    with _style():
        fig = _figure(8.0, 4.8)
        ax = fig.subplots()
        ax.set_xlabel(f"{label} (ms, log scale)")
        ax.set_ylabel("fraction ≤ x")
        lo, hi = math.inf, 0.0
        medians: list[float] = []
        for (name, records), colour in zip(arms.items(), _series_colours(len(arms)), strict=True):
            xs, ys = _ecdf(latency_samples(records).get(metric, []))
            if not xs:
                ax.plot([], [], color=colour, label=f"{name} (no data)")
                continue
            ax.plot(xs, ys, drawstyle="steps-post", color=colour, linewidth=1.8, label=name)
            medians.append(describe(xs[1:])["p50"])
            lo, hi = min(lo, xs[0]), max(hi, xs[-1])
        if hi > 0:
            _log_ms_axis(ax, lo, hi)
            ax.set_ylim(0, 1.02)
        else:
            _no_data(ax, "no successful measured requests")
        for y, name in ((0.5, "p50"), (0.95, "p95")):
            ax.axhline(y, color="0.6", linewidth=0.8, linestyle="--", label="_nolegend_")
            ax.text(0.005, y, name, transform=ax.get_yaxis_transform(), va="bottom", fontsize=8, color="0.4")
        if len(arms) > _LEGEND_INSIDE_MAX:
            ax.legend(
                loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="configuration", frameon=False
            )
        elif arms:
            ax.legend(loc=_empty_corner(ax, medians), title="configuration")
        _suptitle(fig, title or f"{label} by configuration")
    return fig


def percentile_bars(rows: Sequence[BarRow], metric: str = "ttft", title: str | None = None) -> Figure:
    """p50 and p95 of `metric` per configuration as horizontal bars (long configuration names stay
    readable), with confidence-interval whiskers where a row has them."""
    label = axis_label(metric)
    height = 1.6 + 0.55 * max(len(rows), 1)
    with _style():
        fig = _figure(8.0, height)
        ax = fig.subplots()
        ax.grid(axis="y", visible=False)
        bar = 0.38
        top = 0.0
        for offset, key, colour in ((-bar / 2, "p50", _MEASURED), (bar / 2, "p95", _P95)):
            ys = [i + offset for i in range(len(rows))]
            values = [getattr(r, key) for r in rows]
            cis: list[tuple[float, float] | None] = [getattr(r, f"{key}_ci") for r in rows]
            xerr = None
            if any(ci is not None for ci in cis):
                # Whiskers as distances from the bar end; a row without a CI gets none.
                xerr = [
                    [max(0.0, v - ci[0]) if ci else 0.0 for v, ci in zip(values, cis, strict=True)],
                    [max(0.0, ci[1] - v) if ci else 0.0 for v, ci in zip(values, cis, strict=True)],
                ]
            ax.barh(
                ys,
                values,
                height=bar,
                color=colour,
                label=key,
                xerr=xerr,
                error_kw={"ecolor": "0.2", "capsize": 3, "elinewidth": 1.0},
            )
            for y, v, ci in zip(ys, values, cis, strict=True):
                end = max(v, ci[1]) if ci else v
                top = max(top, end)
                ax.text(end, y, f" {v:,.1f}", va="center", ha="left", fontsize=8, color="0.2")
        ax.set_yticks(range(len(rows)), [r.name for r in rows])
        ax.invert_yaxis()  # first row on top, as in the compare table
        ax.set_xlim(0, top * 1.15 if top > 0 else 1.0)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("configuration")
        if rows:
            # Above the plot: inside, it would cover the longest bar.
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, borderaxespad=0.2, frameon=False)
        if any(r.p50_ci or r.p95_ci for r in rows):
            ax.set_title("whiskers: 95 % CI", loc="right", fontsize=9, color="0.3")
        _suptitle(fig, title or f"{label} p50 and p95 by configuration")
    return fig


# -- ladders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LadderPoint:
    """One rung of a ladder (a setting stepped through values): the metric's value at it, with its
    confidence interval; `given` marks the configuration as given."""

    x: float
    y: float
    low: float
    high: float
    given: bool = False


def ladder(points: Sequence[LadderPoint], xlabel: str, ylabel: str, title: str) -> Figure:
    """A metric over the rungs of a ladder as a line, its confidence intervals as a band and
    whiskers; the configuration as given is the ringed point."""
    ordered = sorted(points, key=lambda p: p.x)
    with _style():
        fig = _figure(7.0, 4.2)
        ax = fig.subplots()
        if not ordered:
            _no_data(ax, "no rung measured")
        else:
            xs = [p.x for p in ordered]
            ys = [p.y for p in ordered]
            lows = [p.low for p in ordered]
            highs = [p.high for p in ordered]
            ax.fill_between(xs, lows, highs, color=_MEASURED, alpha=0.15, linewidth=0, label="95% CI")
            below = [y - lo for y, lo in zip(ys, lows, strict=True)]
            errors = [below, [hi - y for y, hi in zip(ys, highs, strict=True)]]
            ax.errorbar(xs, ys, yerr=errors, color=_MEASURED, marker="o", linewidth=1.8, capsize=3, label="p50")
            for p in ordered:
                if p.given:
                    ax.plot([p.x], [p.y], "o", markersize=12, fillstyle="none", color=_FAILED, label="as given")
            ax.set_ylim(bottom=0)
            ax.legend(loc="best")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _suptitle(fig, title)
    return fig


# -- timeline -----------------------------------------------------------------------------------


def _end_ms(record: RequestRecord) -> float:
    """The last moment known of a request, in ms from t0: E2E when it finished, else the last
    clock point it reached (a failed request has no E2E)."""
    if record.e2e_ms is not None:
        return record.e2e_ms
    known = [t for t in (record.ttfb_ms, record.ttft_ms, record.send_ms) if t is not None]
    known += record.chunk_times_ms[-1:]
    return max(known, default=0.0)


def _span(record: RequestRecord) -> tuple[float, float]:
    """(submitted, ended) in wall-clock seconds."""
    t0 = record.started_at + (record.queue_ms or 0.0) / 1000.0
    return record.started_at, t0 + _end_ms(record) / 1000.0


def _warmup_interval(records: Sequence[RequestRecord], samples: Sequence[Sample]) -> tuple[float, float] | None:
    """Wall-clock extent of the warmup phase: from its requests when there are any (exact), else
    from the samples' phase labels (to within half a sampling interval)."""
    spans = [_span(r) for r in records if r.phase == Phase.WARMUP and r.started_at > 0]
    if spans:
        return min(s for s, _ in spans), max(e for _, e in spans)
    idx = [i for i, s in enumerate(samples) if s.phase == Phase.WARMUP]
    if not idx:
        return None
    first, last = idx[0], idx[-1]
    # A sample carries the phase current when it was taken: the phase began after the sample
    # before it, and ended before the next one.
    begin = samples[first].wall_time
    if first > 0:
        begin = (samples[first - 1].wall_time + begin) / 2
    end = samples[last].wall_time
    if last + 1 < len(samples):
        end = (end + samples[last + 1].wall_time) / 2
    return begin, end


def _requests_panel(ax: Axes, records: Sequence[RequestRecord], origin: float) -> None:
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    ordered = sorted((r for r in records if r.started_at > 0), key=lambda r: (r.started_at, r.index))
    width = max(0.6, min(3.0, 250.0 / max(len(ordered), 1)))
    groups: dict[str, list[list[tuple[float, float]]]] = {"warmup": [], "measured": [], "failed": []}
    first_x: list[float] = []
    first_y: list[float] = []
    failed_x: list[float] = []
    failed_y: list[float] = []
    cold_x: list[float] = []
    cold_y: list[float] = []
    number = request_numbers(records)  # as the console and server.sim.faults number requests
    for r in ordered:
        y = number[id(r)]
        start, end = _span(r)
        if r.cold:
            cold_x.append(start - origin)
            cold_y.append(float(y))
        segment = [(start - origin, float(y)), (end - origin, float(y))]
        if not r.ok and not r.cancelled:
            groups["failed"].append(segment)
            failed_x.append(end - origin)
            failed_y.append(float(y))
        elif r.phase == Phase.WARMUP:
            groups["warmup"].append(segment)
        else:
            groups["measured"].append(segment)
        if r.ttft_ms is not None:
            t0 = r.started_at + (r.queue_ms or 0.0) / 1000.0
            first_x.append(t0 + r.ttft_ms / 1000.0 - origin)
            first_y.append(float(y))
    colours = {"warmup": _WARMUP, "measured": _MEASURED, "failed": _FAILED}
    labels = {"warmup": "warmup request", "measured": "measured request", "failed": "failed request"}
    for key, segments in groups.items():
        if segments:
            ax.add_collection(
                LineCollection(segments, colors=colours[key], linewidths=width, label=labels[key], capstyle="butt")
            )
    if failed_x:
        ax.scatter(failed_x, failed_y, marker="x", s=18, color=_FAILED, linewidths=1.0, zorder=3, label="_nolegend_")
    if first_x:
        ax.scatter(
            first_x, first_y, marker="|", s=max(8.0, width * 12), color=_FIRST_TOKEN, linewidths=0.9, zorder=3,
            label="first token",
        )  # fmt: skip
    if cold_x:
        ax.scatter(
            cold_x, cold_y, marker=">", s=max(10.0, width * 10), color=_COLD, zorder=4, label="cold (model loaded)"
        )
    ax.set_ylim(0, len(ordered) + 1)
    ax.set_ylabel("request (1 = first sent, warmup included)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", visible=False)
    if not ordered:
        ax.text(0.5, 0.5, "no requests recorded", transform=ax.transAxes, ha="center", va="center", color="0.4")


def _plot_series(ax: Axes, xs: Sequence[float], ys: Sequence[float | None], colour: str, label: str) -> bool:
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if not points:
        return False
    ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linewidth=1.2, label=label)
    return True


def _cpu_panel(ax: Axes, samples: Sequence[Sample], xs: Sequence[float]) -> None:
    series = (
        ([s.cpu_pct for s in samples], "host (% of all cores)"),
        ([s.server_cpu_pct for s in samples], "server (100 % = 1 core)"),
        ([s.client_cpu_pct for s in samples], "client (100 % = 1 core)"),
    )
    for (ys, label), colour in zip(series, _CPU_COLOURS, strict=False):
        _plot_series(ax, xs, ys, colour, label)
    ax.set_ylabel("CPU (%)")
    ax.set_ylim(bottom=0)


def _gpu_panel(ax: Axes, samples: Sequence[Sample], xs: Sequence[float], field: str, ylabel: str) -> None:
    indices = sorted({g.index for s in samples for g in s.gpus})
    for n, gpu in enumerate(indices):
        ys = [next((getattr(g, field) for g in s.gpus if g.index == gpu), None) for s in samples]
        _plot_series(ax, xs, ys, _SERIES[n % len(_SERIES)], f"GPU {gpu}")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)


def _has_gpu_field(samples: Sequence[Sample], field: str) -> bool:
    return any(getattr(g, field) is not None for s in samples for g in s.gpus)


def _has_cpu(samples: Sequence[Sample]) -> bool:
    return any(v is not None for s in samples for v in (s.cpu_pct, s.server_cpu_pct, s.client_cpu_pct))


def timeline(records: Sequence[RequestRecord], samples: Sequence[Sample], title: str) -> Figure:
    """Each request as a segment from submit to its last chunk (a tick at its first token), and
    beneath it on the same time axis the CPU and, where sampled, GPU utilisation and power. The
    warmup phase is shaded in every panel. Without telemetry (or without a GPU) those panels are
    left out."""
    starts = [r.started_at for r in records if r.started_at > 0]
    origin = min([*starts, *(s.wall_time for s in samples)], default=0.0)
    panels: list[str] = ["requests"]
    if _has_cpu(samples):
        panels.append("cpu")
    if _has_gpu_field(samples, "util_pct"):
        panels.append("gpu_util")
    if _has_gpu_field(samples, "power_w"):
        panels.append("gpu_power")
    ratios = [3.0] + [1.0] * (len(panels) - 1)
    with _style():
        fig = _figure(11.0, 3.6 + 1.5 * (len(panels) - 1))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios})[:, 0]
        xs = [s.wall_time - origin for s in samples]
        for ax, panel in zip(axes, panels, strict=True):
            if panel == "requests":
                _requests_panel(ax, records, origin)
            elif panel == "cpu":
                _cpu_panel(ax, samples, xs)
            elif panel == "gpu_util":
                _gpu_panel(ax, samples, xs, "util_pct", "GPU util (%)")
            else:
                _gpu_panel(ax, samples, xs, "power_w", "GPU power (W)")
        warmup = _warmup_interval(records, samples)
        if warmup is not None:
            for n, ax in enumerate(axes):
                ax.axvspan(
                    warmup[0] - origin, warmup[1] - origin, color=_SHADE, alpha=0.12, linewidth=0, zorder=0,
                    label="warmup phase" if n == 0 else "_nolegend_", gid="warmup",
                )  # fmt: skip
        for ax in axes:
            ax.autoscale_view(scaley=False)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
        axes[-1].set_xlabel("time since run start (s)")
        if starts or samples:
            axes[-1].set_xlim(left=0)
        else:
            axes[-1].set_xlim(0, 1)
        _suptitle(fig, title)
    return fig
