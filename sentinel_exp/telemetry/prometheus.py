"""A remote target's host telemetry from the Prometheus exporters already running on it.

prometheus-node-exporter gives CPU and memory, NVIDIA's dcgm-exporter the GPUs. Each scrape is
parsed with prometheus_client's parser and mapped onto the quantities the local probes give
(cpu.py, gpu.py), so summaries, series and reports treat both alike (docs/measurement.md, Remote
telemetry). The HTTP GET is the caller's: telemetry/ imports no HTTP client, so a `fetch(url) ->
text` is passed in (monitor.py passes one over httpx).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .cpu import CpuReading, MemoryReading
from .gpu import GpuReading
from .sampler import HostReading

_MB = 1024.0 * 1024.0

NODE_CPU = "node_cpu_seconds_total"
NODE_MEM_TOTAL = "node_memory_MemTotal_bytes"
NODE_MEM_AVAILABLE = "node_memory_MemAvailable_bytes"
# Modes in which a core is not working: the accounting of SystemProbe (psutil's cpu_percent).
# node_cpu_seconds_total has no guest modes (they are node_cpu_guest_seconds_total, already inside
# user and nice), so the sum over its modes is the core's whole time, as psutil's total.
_IDLE_MODES = frozenset({"idle", "iowait"})

# dcgm-exporter field -> GpuReading field. Units already match: %, MiB, W, mJ, °C, MHz.
DCGM_FIELDS: Mapping[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "util_pct",
    "DCGM_FI_DEV_FB_USED": "mem_used_mb",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "energy_mj",  # counter since boot: differenced per phase
    "DCGM_FI_DEV_GPU_TEMP": "temp_c",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
}
# DCGM reports "no value" in band: int64 fields from 0x7ffffffffffffff0 up, float64 fields as 2**47
# plus a small code (blank, not found, not supported, no permission).
_DCGM_INT64_BLANK = float(0x7FFFFFFFFFFFFFF0)
_DCGM_FP64_BLANK = float(2**47)


class ExpositionError(ValueError):
    """A scrape that is not Prometheus text exposition format."""


@dataclass(frozen=True)
class NodeFigures:
    """What one node-exporter scrape says about CPU and memory."""

    cpu_seconds: Mapping[tuple[str, str], float]  # (cpu, mode) -> seconds since boot
    mem_total_b: float | None = None
    mem_available_b: float | None = None


@dataclass(frozen=True)
class DcgmGpu:
    """One GPU of a dcgm-exporter scrape; a field the exporter did not give is None."""

    key: str  # the GPU's UUID label, else its gpu label: stable across scrapes
    gpu: str  # dcgm-exporter's `gpu` label (the device index on that host)
    values: Mapping[str, float | None] = field(default_factory=dict)  # GpuReading field -> value


@dataclass(frozen=True)
class Exposition:
    """The figures sentinel-exp maps from one scrape; `node` is None without node-exporter's."""

    node: NodeFigures | None
    gpus: tuple[DcgmGpu, ...]

    @property
    def empty(self) -> bool:
        return self.node is None and not self.gpus


def _dcgm_value(value: float) -> float | None:
    if not math.isfinite(value) or value >= _DCGM_INT64_BLANK or _DCGM_FP64_BLANK <= value < _DCGM_FP64_BLANK + 16:
        return None
    return float(value)


_KNOWN = frozenset({NODE_CPU, NODE_MEM_TOTAL, NODE_MEM_AVAILABLE, *DCGM_FIELDS})


def _exposed_name(sample_name: str) -> str:
    """The name as the exporter wrote it: the parser appends `_total` to the samples of a counter
    whose name lacks it (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION)."""
    if sample_name not in _KNOWN and sample_name.endswith("_total") and sample_name[: -len("_total")] in _KNOWN:
        return sample_name[: -len("_total")]
    return sample_name


def _gpu_order(gpu: DcgmGpu) -> tuple[int, str]:
    return (int(gpu.gpu), gpu.key) if gpu.gpu.isdigit() else (1 << 30, gpu.key)


def parse_exposition(text: str, source: str = "the exporter") -> Exposition:
    """The node-exporter and dcgm-exporter figures in one scrape; other metrics are skipped.

    Raises ExpositionError, naming `source`, when the text is not in the exposition format.
    """
    cpu: dict[tuple[str, str], float] = {}
    memory: dict[str, float] = {}
    gpus: dict[str, dict[str, float | None]] = {}
    gpu_labels: dict[str, str] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels = _exposed_name(sample.name), sample.labels
                if name == NODE_CPU and "cpu" in labels and "mode" in labels:
                    cpu[(labels["cpu"], labels["mode"])] = float(sample.value)
                elif name in (NODE_MEM_TOTAL, NODE_MEM_AVAILABLE):
                    memory[name] = float(sample.value)
                elif name in DCGM_FIELDS:
                    key = labels.get("UUID") or labels.get("gpu") or "0"
                    gpu_labels.setdefault(key, labels.get("gpu", ""))
                    gpus.setdefault(key, {})[DCGM_FIELDS[name]] = _dcgm_value(float(sample.value))
    except ValueError as exc:
        first = text.lstrip()[:60].splitlines()[0] if text.strip() else ""
        raise ExpositionError(
            f"{source} did not answer in the Prometheus text format ({exc}; it begins {first!r})"
        ) from exc
    node = None
    if cpu or memory:
        node = NodeFigures(cpu, memory.get(NODE_MEM_TOTAL), memory.get(NODE_MEM_AVAILABLE))
    found = (DcgmGpu(key, gpu_labels[key], values) for key, values in gpus.items())
    return Exposition(node, tuple(sorted(found, key=_gpu_order)))


def _core_busy_total(cpu_seconds: Mapping[tuple[str, str], float]) -> dict[str, tuple[float, float]]:
    cores: dict[str, tuple[float, float]] = {}
    for (core, mode), seconds in cpu_seconds.items():
        busy, total = cores.get(core, (0.0, 0.0))
        cores[core] = (busy + (0.0 if mode in _IDLE_MODES else seconds), total + seconds)
    return cores


def cpu_between(before: NodeFigures, after: NodeFigures) -> CpuReading | None:
    """CPU use between two scrapes, from the counters' deltas (busy time / all time, per core and
    over all cores, as SystemProbe does locally). None when the cores differ or a counter went
    back (the exporter or the host restarted): that interval has no figure."""
    b0, b1 = _core_busy_total(before.cpu_seconds), _core_busy_total(after.cpu_seconds)
    if not b1 or b0.keys() != b1.keys():
        return None
    per_core: list[float] = []
    busy_sum = total_sum = 0.0
    for core, (busy1, total1) in b1.items():
        busy0, total0 = b0[core]
        d_busy, d_total = busy1 - busy0, total1 - total0
        if d_busy < 0 or d_total < 0:
            return None
        busy_sum += d_busy
        total_sum += d_total
        per_core.append(min(100.0, 100.0 * d_busy / d_total) if d_total > 0 else 0.0)
    overall = min(100.0, 100.0 * busy_sum / total_sum) if total_sum > 0 else 0.0
    return CpuReading(round(overall, 3), round(max(per_core, default=0.0), 3))


def memory_of(node: NodeFigures) -> MemoryReading | None:
    """Used = total - available, as MemoryReading counts locally; None without both figures."""
    if node.mem_total_b is None or node.mem_available_b is None or node.mem_total_b <= 0:
        return None
    used = node.mem_total_b - node.mem_available_b
    return MemoryReading(used / _MB, round(100.0 * used / node.mem_total_b, 3))


Fetch = Callable[[str], str]


@dataclass
class _Endpoint:
    url: str
    last_node: NodeFigures | None = None


class PrometheusProbe:
    """Host CPU, memory and GPUs of a target from its exporters, one scrape of each per read().

    CPU % needs two scrapes: the first read (or check()) primes the counters. CPU and memory come
    from the first URL that serves node-exporter figures; the GPUs of every dcgm-exporter URL are
    numbered in URL order, then by their `gpu` label. An endpoint that fails one scrape costs only
    its own figures for that sample, noted once per endpoint.
    """

    def __init__(self, urls: Sequence[str], fetch: Fetch) -> None:
        if not urls:
            raise ValueError("PrometheusProbe needs at least one URL")
        self._fetch = fetch
        self._endpoints = [_Endpoint(url) for url in urls]
        self._gpu_index: dict[tuple[str, str], int] = {}
        self._noted: set[str] = set()
        self.notes: list[str] = []

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def scrape(self, url: str) -> Exposition:
        """One scrape of `url`, parsed. Raises what fetch raises, or ExpositionError."""
        return parse_exposition(self._fetch(url), url)

    def check(self) -> list[str]:
        """Scrape every endpoint once (priming the CPU counters) and keep those that answer with
        figures this probe maps. Returns one problem per endpoint dropped."""
        problems: list[str] = []
        kept: list[_Endpoint] = []
        for endpoint in self._endpoints:
            try:
                exposition = self.scrape(endpoint.url)
            except ExpositionError as exc:
                problems.append(str(exc))
                continue
            except Exception as exc:  # connection refused, timeout, HTTP error, ...
                problems.append(f"cannot scrape {endpoint.url}: {type(exc).__name__}: {exc}".rstrip(": "))
                continue
            if exposition.empty:
                problems.append(
                    f"{endpoint.url} serves none of the figures sentinel-exp maps "
                    f"({NODE_CPU}, {NODE_MEM_TOTAL}, DCGM_FI_DEV_*): is it node-exporter or dcgm-exporter?"
                )
                continue
            endpoint.last_node = exposition.node
            self._gpu_readings(endpoint.url, exposition.gpus)  # numbers the GPUs in URL order
            kept.append(endpoint)
        self._endpoints = kept
        return problems

    @property
    def usable(self) -> bool:
        return bool(self._endpoints)

    def read(self) -> HostReading:
        cpu: CpuReading | None = None
        memory: MemoryReading | None = None
        node_seen = False
        gpus: list[GpuReading] = []
        for endpoint in self._endpoints:
            try:
                exposition = self.scrape(endpoint.url)
            except Exception as exc:
                self._note(endpoint.url, f"{endpoint.url}: a scrape failed, its figures recorded as None ({exc})")
                endpoint.last_node = None  # the next answer primes the CPU counters again
                continue
            node, before = exposition.node, endpoint.last_node
            endpoint.last_node = node
            if node is not None and not node_seen:
                node_seen = True
                memory = memory_of(node)
                cpu = cpu_between(before, node) if before is not None else None
            gpus += self._gpu_readings(endpoint.url, exposition.gpus)
        return HostReading(cpu, memory, tuple(gpus))

    def _gpu_readings(self, url: str, found: Iterable[DcgmGpu]) -> list[GpuReading]:
        out = []
        for gpu in found:
            index = self._gpu_index.setdefault((url, gpu.key), len(self._gpu_index))
            value = gpu.values.get
            out.append(
                GpuReading(
                    index=index,
                    util_pct=value("util_pct"),
                    mem_used_mb=value("mem_used_mb"),
                    power_w=value("power_w"),
                    energy_mj=value("energy_mj"),
                    temp_c=value("temp_c"),
                    sm_clock_mhz=value("sm_clock_mhz"),
                    throttle_reasons=None,  # DCGM's clock-event reasons are not in its default counters
                )
            )
        return out

    def _note(self, key: str, text: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.notes.append(text)
