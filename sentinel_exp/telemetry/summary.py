"""Pure summaries of telemetry samples: MLflow metrics, time series, phase windows.

Multi-GPU conventions (per sample, then over samples):
- utilisation, SM clock: mean over devices (a "how busy is the box" figure);
- memory used, power: SUM over devices, so gpu_power_w_mean x duration ~ gpu_energy_j, which
  is a sum over devices as well;
- temperature: max over devices.
With one GPU all of these are simply that GPU's values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeGuard

from .gpu import GpuReading
from .sampler import Sample


class SeriesPoint(NamedTuple):
    key: str
    value: float
    timestamp_ms: int
    step: int


class EnergyEstimate(NamedTuple):
    joules: float | None
    # "counter": NVML total-energy counter differenced; "power_integral": trapezoid over power
    # readings (counter unsupported); "mixed": per device, some of each; "none": no data.
    method: str


def _ok(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def _select(samples: Iterable[Sample], phase: str | None) -> list[Sample]:
    return [s for s in samples if phase is None or s.phase == phase]


def _agg(gpus: Sequence[GpuReading], field: str, how: Callable[[list[float]], float]) -> float | None:
    vals = [v for v in (getattr(g, field) for g in gpus) if _ok(v)]
    return how(vals) if vals else None


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals)


# per-sample GPU aggregates: (series/metric stem, GpuReading field, reducer over devices)
_GPU_AGG: tuple[tuple[str, str, Callable[[list[float]], float]], ...] = (
    ("gpu_util_pct", "util_pct", _mean),
    ("gpu_mem_mb", "mem_used_mb", sum),
    ("gpu_power_w", "power_w", sum),
    ("gpu_temp_c", "temp_c", max),
    ("gpu_sm_clock_mhz", "sm_clock_mhz", _mean),
)
_HOST_SERIES = (
    "cpu_pct",
    "cpu_pct_max_core",
    "mem_used_mb",
    "server_cpu_pct",
    "server_rss_mb",
    "client_cpu_pct",
    "other_cpu_pct",
)


def gpu_energy(samples: Sequence[Sample], phase: str | None = "measured") -> EnergyEstimate:
    """GPU energy within `phase`, summed over devices.

    Per device: last - first reading of the cumulative energy counter (mJ → J). If the
    device has no counter (or it went backwards, e.g. a driver reload), integrate its power
    over the sample times instead. Needs two samples in the phase.
    """
    sel = _select(samples, phase)
    series: dict[int, list[tuple[float, GpuReading]]] = {}
    for s in sel:
        for g in s.gpus:
            series.setdefault(g.index, []).append((s.mono_time, g))
    total, methods = 0.0, set()
    for points in series.values():
        counter = [g.energy_mj for _, g in points if _ok(g.energy_mj)]
        if len(counter) >= 2 and counter[-1] >= counter[0]:
            total += (counter[-1] - counter[0]) / 1000.0
            methods.add("counter")
            continue
        power = [(t, g.power_w) for t, g in points if _ok(g.power_w)]
        if len(power) >= 2:
            total += sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(power))
            methods.add("power_integral")
    if not methods:
        return EnergyEstimate(None, "none")
    return EnergyEstimate(total, methods.pop() if len(methods) == 1 else "mixed")


def summarize_telemetry(
    samples: Sequence[Sample], phase: str | None = "measured", output_tokens: int | None = None
) -> dict[str, float]:
    """Flat MLflow metrics for the samples of `phase` (None = all samples).

    A metric is omitted when there is no data for it; values are always finite.
    """
    sel = _select(samples, phase)
    out: dict[str, float] = {}

    def put(name: str, vals: Iterable[float | None], how: Callable[[list[float]], float]) -> None:
        v = [x for x in vals if _ok(x)]
        if v:
            r = float(how(v))
            if math.isfinite(r):
                out[name] = r

    put("cpu_pct_mean", (s.cpu_pct for s in sel), _mean)
    put("cpu_pct_max", (s.cpu_pct for s in sel), max)
    put("server_cpu_pct_mean", (s.server_cpu_pct for s in sel), _mean)
    put("server_cpu_pct_max", (s.server_cpu_pct for s in sel), max)
    put("server_rss_mb_max", (s.server_rss_mb for s in sel), max)
    put("client_cpu_pct_mean", (s.client_cpu_pct for s in sel), _mean)
    put("client_cpu_pct_max", (s.client_cpu_pct for s in sel), max)
    put("other_cpu_pct_mean", (s.other_cpu_pct for s in sel), _mean)
    put("mem_used_mb_max", (s.mem_used_mb for s in sel), max)
    with_gpu = [s for s in sel if s.gpus]
    util = [_agg(s.gpus, "util_pct", _mean) for s in with_gpu]
    put("gpu_util_pct_mean", util, _mean)
    put("gpu_util_pct_max", util, max)
    put("gpu_mem_mb_max", (_agg(s.gpus, "mem_used_mb", sum) for s in with_gpu), max)
    put("gpu_power_w_mean", (_agg(s.gpus, "power_w", sum) for s in with_gpu), _mean)
    energy = gpu_energy(sel, None)
    if _ok(energy.joules):
        out["gpu_energy_j"] = float(energy.joules)
        if output_tokens and output_tokens > 0 and energy.joules > 0:
            out["energy_j_per_token"] = energy.joules / output_tokens
    put("gpu_temp_c_max", (_agg(s.gpus, "temp_c", max) for s in with_gpu), max)
    put("gpu_sm_clock_mhz_mean", (_agg(s.gpus, "sm_clock_mhz", _mean) for s in with_gpu), _mean)
    return out


def series_points(samples: Sequence[Sample], phase: str | None = None) -> list[SeriesPoint]:
    """One point per sample per quantity that has a value (step = sample index).

    Per-device keys (gpu0_util_pct, ...) are added only when more than one GPU was seen.
    """
    sel = _select(samples, phase)
    multi = len({g.index for s in sel for g in s.gpus}) > 1
    pts: list[SeriesPoint] = []
    for s in sel:
        values: list[tuple[str, float | None]] = [(k, getattr(s, k)) for k in _HOST_SERIES]
        if s.gpus:
            values += [(stem, _agg(s.gpus, field, how)) for stem, field, how in _GPU_AGG]
            if multi:
                values += [
                    (f"gpu{g.index}{stem[3:]}", getattr(g, field)) for g in s.gpus for stem, field, _ in _GPU_AGG
                ]
        ts = round(s.wall_time * 1000.0)
        pts += [SeriesPoint(k, float(v), ts, s.index) for k, v in values if _ok(v)]
    return pts


# Above these the latencies are not the server's alone (see contention_warnings). The client
# runs its event loop on one core, so its limit is one core's; bystanders matter once they take
# a real share of the machine (a quarter of it, and at least half a core): a browser's half core
# on a 16-core desktop leaves the benchmark alone, on a 2-core box it does not.
CLIENT_BOUND_PCT = 90.0
OTHER_BUSY_SHARE = 0.25
OTHER_BUSY_MIN_PCT = 50.0


def bystanders_busy(other_pct: float | None, n_cpus: int) -> bool:
    """Whether other processes took enough of the machine to slow the server (the limits above)."""
    return other_pct is not None and other_pct >= max(OTHER_BUSY_MIN_PCT, 100.0 * OTHER_BUSY_SHARE * n_cpus)


def free_cores(other_pct: float | None, n_cpus: int) -> int:
    """The cores a server's threads can have to themselves: all of them where the other processes
    stay under the limits above, else the whole cores those leave (at least one)."""
    if not bystanders_busy(other_pct, n_cpus):
        return n_cpus
    assert other_pct is not None
    return max(1, math.floor(n_cpus - other_pct / 100.0))


def contention_warnings(
    metrics: Mapping[str, float], n_cpus: int, server_threads: int | None = None, when: str = "while measuring"
) -> list[str]:
    """What, besides the server, may have slowed the measured requests (CPU % of one core).
    `server_threads`: the compute threads of a llama.cpp server on this machine (None: not one);
    `when`: the part of the run the metrics are of, as the warnings say it."""
    warnings = []
    client = metrics.get("client_cpu_pct_mean")
    if client is not None and client >= CLIENT_BOUND_PCT:
        warnings.append(
            f"the load generator used {client:.0f}% of a core on average {when}: it may be the "
            "bottleneck, and its own queueing is inside the latencies (lower workload.concurrency or "
            "workload.rate)"
        )
    other = metrics.get("other_cpu_pct_mean")
    if other is not None and bystanders_busy(other, n_cpus):
        warnings.append(
            f"other processes kept {other:.0f}% of a core busy on average (of {100 * n_cpus}% on "
            f"{n_cpus} cores) {when}: the latencies may include contention with them"
        )
        free = free_cores(other, n_cpus)
        if server_threads is not None and server_threads > free:
            warnings.append(
                f"the server's {server_threads} llama.cpp threads wait for each other at every step, so one "
                f"that a busy core holds up stalls them all (decoding was seen 20 times slower this way): with "
                f"about {other / 100.0:.1f} of {n_cpus} cores taken, try options.num_thread={free}, or free the cores"
            )
    return warnings
