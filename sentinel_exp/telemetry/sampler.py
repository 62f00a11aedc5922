"""Background telemetry sampler: a daemon thread on an absolute tick schedule."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psutil

from .cpu import CpuReading, MemoryReading, OwnProcessProbe, ProcessTreeProbe, SystemProbe
from .gpu import GpuProbe, GpuReading

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    index: int  # 0..n-1, consecutive; used as the MLflow step
    wall_time: float  # time.time() seconds, taken together with `phase`
    mono_time: float  # sampler clock (time.monotonic by default)
    phase: str
    cpu_pct: float | None  # CPU quantities cover the interval ending at this sample
    cpu_pct_max_core: float | None
    mem_used_mb: float | None
    mem_pct: float | None
    server_cpu_pct: float | None  # 100 = one core; None without a server pid or once it's gone
    server_rss_mb: float | None
    client_cpu_pct: float | None = None  # this process (load generator); 100 = one core
    # Everything else on the machine: all cores' busy time minus server and client (100 = one
    # core); None unless the server process is known.
    other_cpu_pct: float | None = None
    gpus: tuple[GpuReading, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "gpus"}
        d["gpus"] = [g.to_dict() for g in self.gpus]
        return d


@dataclass(frozen=True)
class HostReading:
    """Whole-host figures of one sample, read from elsewhere than this machine's own counters."""

    cpu: CpuReading | None = None
    memory: MemoryReading | None = None
    gpus: tuple[GpuReading, ...] = ()


class HostProbe(Protocol):
    """Where a sampler reads the target host's CPU, memory and GPUs when they are not this
    machine's (e.g. telemetry.prometheus.PrometheusProbe)."""

    @property
    def notes(self) -> Sequence[str]: ...

    def read(self) -> HostReading: ...


class NoHost:
    """The target host's figures are unavailable: samples carry the client's own figures only."""

    notes: Sequence[str] = ()

    def read(self) -> HostReading:
        return HostReading()


class Sampler:
    """Samples host CPU/memory, a server's process tree and GPUs every `interval_s`.

    Ticks fall at start + k*interval (missed ticks are skipped, never bunched), so the sample
    count tracks duration/interval even when one sample is slow. The first sample comes one
    interval after start(), so every CPU figure covers a full interval.

    gpu_probe: None → the sampler opens its own GpuProbe() (real NVML) and closes it in stop();
    a probe you pass is opened if needed but left for you to close; `gpu=False` disables GPUs.
    discovery_budget: CPU share allowed for re-scanning the server's children (see
    ProcessTreeProbe); None re-scans on every sample.
    host: None reads host CPU, memory and GPUs from this machine (psutil, NVML); a HostProbe reads
    them from it instead (a remote target's exporters, or NoHost), and NVML is not opened.
    """

    def __init__(
        self,
        interval_s: float = 0.1,
        server_pid: int | None = None,
        gpu_probe: GpuProbe | None = None,
        *,
        gpu: bool = True,
        discovery_budget: float | None = 0.002,
        host: HostProbe | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.server_pid = server_pid
        self._clock: Callable[[], float] = time.monotonic
        self._wall: Callable[[], float] = time.time
        self.host = host
        gpu = gpu and host is None  # a host probe brings the target's GPUs, if any
        self._owns_gpu = gpu and gpu_probe is None
        self.gpu_probe: GpuProbe | None = None
        if gpu:
            self.gpu_probe = gpu_probe if gpu_probe is not None else GpuProbe()
        self._system = SystemProbe()
        self._own = OwnProcessProbe()
        self._n_cpus = psutil.cpu_count() or 1
        self._tree = (
            ProcessTreeProbe(server_pid, clock=self._clock, discovery_budget=discovery_budget) if server_pid else None
        )
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[Sample] = []
        self._phase = "setup"
        self.phase_marks: list[tuple[str, float, float]] = []  # (phase, wall, mono)
        self._noted: set[str] = set()
        self._notes: list[str] = []
        self.error_counts: Counter[str] = Counter()
        self._t0: float | None = None
        self._t_end: float | None = None
        self.setup_cpu_s = 0.0
        self.sampling_cpu_s = 0.0
        self._sample_wall_sum = 0.0
        self._sample_wall_max = 0.0
        self.missed_ticks = 0

    # -- caller side: every method returns promptly ----------------------------------------
    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("Sampler already started")
        self._t0 = self._clock()
        self._thread = threading.Thread(target=self._run, name="sentinel-telemetry", daemon=True)
        self._thread.start()
        return self

    def mark_phase(self, name: str) -> None:
        """Samples taken from now on carry `name`. O(1); never waits on a sample."""
        with self._lock:
            self._phase = name
            self.phase_marks.append((name, self._wall(), self._clock()))

    @property
    def phase(self) -> str:
        return self._phase

    def stop(self, timeout_s: float = 2.0) -> list[Sample]:
        """Stop sampling and return all samples. Waits at most for the sample in flight
        (bounded by `timeout_s` beyond one interval, in case a driver call hangs)."""
        if self._thread is None:
            return []
        self._stop_evt.set()
        self._thread.join(timeout=self.interval_s + timeout_s)
        if self._t_end is None:
            self._t_end = self._clock()
        if self._thread.is_alive():
            self._note("sampler", f"sampler thread still busy {timeout_s:.1f}s after stop()")
        elif self._owns_gpu and self.gpu_probe is not None:
            self.gpu_probe.close()  # only once the thread is done: no read races the shutdown
        return self.samples

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    @property
    def notes(self) -> list[str]:
        """Problems seen while sampling, each once (GPU probe notes included)."""
        gpu_notes = list(self.gpu_probe.notes) if self.gpu_probe is not None else []
        if self.gpu_probe is not None and self.gpu_probe.opened and not self.gpu_probe.available:
            gpu_notes.insert(0, f"GPU telemetry unavailable: {self.gpu_probe.reason}")
        host_notes = list(self.host.notes) if self.host is not None else []
        return list(self._notes) + gpu_notes + host_notes

    @property
    def wall_s(self) -> float:
        if self._t0 is None:
            return 0.0
        end = self._t_end if self._t_end is not None else self._clock()
        return max(0.0, end - self._t0)

    @property
    def overhead_core_fraction(self) -> float:
        """Sampler thread CPU seconds spent sampling / wall seconds (0.01 = 1% of one core)."""
        wall = self.wall_s
        return self.sampling_cpu_s / wall if wall > 0 else 0.0

    def stats(self) -> dict[str, float]:
        n = len(self._samples)
        return {
            "samples": float(n),
            "wall_s": self.wall_s,
            "sampling_cpu_s": self.sampling_cpu_s,
            "setup_cpu_s": self.setup_cpu_s,
            "overhead_core_fraction": self.overhead_core_fraction,
            "sample_wall_ms_mean": 1000.0 * self._sample_wall_sum / n if n else 0.0,
            "sample_wall_ms_max": 1000.0 * self._sample_wall_max,
            "missed_ticks": float(self.missed_ticks),
            "server_tree_scans": float(self._tree.discoveries if self._tree else 0),
        }

    # -- sampler thread --------------------------------------------------------------------
    def _note(self, label: str, text: str) -> None:
        self.error_counts[label] += 1
        if label not in self._noted:
            self._noted.add(label)
            self._notes.append(text)

    def _guard(self, label: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as exc:
            self._note(label, f"{label} failed, recorded as None: {type(exc).__name__}: {exc}")
            return None

    def _run(self) -> None:
        c0 = time.thread_time()
        gpu = self.gpu_probe
        if gpu is not None:
            self._guard("gpu_open", gpu.open)  # here, not in start(): nvmlInit can take ~1 s
        if self.host is None:
            self._guard("cpu", self._system.read_cpu)  # prime the deltas
        self._guard("client", self._own.read)
        if self._tree is not None:
            self._guard("server", self._tree.read)
        self.setup_cpu_s = time.thread_time() - c0
        assert self._t0 is not None
        t0, dt, k = self._t0, self.interval_s, 1
        while True:
            delay = t0 + k * dt - self._clock()
            if delay > 0 and self._stop_evt.wait(delay):
                break
            if self._stop_evt.is_set():
                break
            c1, w1 = time.thread_time(), self._clock()
            try:
                self._take_sample()
            except Exception as exc:  # a bug here must cost a sample, not the run
                self._note("sampler", f"sample failed: {type(exc).__name__}: {exc}")
            w2 = self._clock()
            self.sampling_cpu_s += time.thread_time() - c1
            self._sample_wall_sum += w2 - w1
            self._sample_wall_max = max(self._sample_wall_max, w2 - w1)
            due = math.floor((w2 - t0) / dt) + 1  # next tick still in the future
            if due > k + 1:
                self.missed_ticks += due - (k + 1)
            k = max(k + 1, due)
        self._t_end = self._clock()

    def _take_sample(self) -> None:
        with self._lock:
            phase, mono, wall = self._phase, self._clock(), self._wall()
            index = len(self._samples)
        if self.host is not None:
            host = self._guard("host", self.host.read) or HostReading()
            cpu, mem, gpus = host.cpu, host.memory, host.gpus
        else:
            cpu = self._guard("cpu", self._system.read_cpu)
            mem = self._guard("memory", self._system.read_memory)
            gpus = ()
            if self.gpu_probe is not None and self.gpu_probe.available:
                gpus = self._guard("gpu", self.gpu_probe.read) or ()
        tree = self._guard("server", self._tree.read) if self._tree is not None else None
        client = self._guard("client", self._own.read)
        other = None
        # Only from this machine's own counters: the server tree and the client are local processes.
        if (
            self.host is None
            and cpu is not None
            and tree is not None
            and tree.cpu_pct is not None
            and client is not None
        ):
            other = round(max(0.0, cpu.cpu_pct * self._n_cpus - tree.cpu_pct - client), 3)
        sample = Sample(
            index=index,
            wall_time=wall,
            mono_time=mono,
            phase=phase,
            cpu_pct=cpu.cpu_pct if cpu else None,
            cpu_pct_max_core=cpu.cpu_pct_max_core if cpu else None,
            mem_used_mb=mem.mem_used_mb if mem else None,
            mem_pct=mem.mem_pct if mem else None,
            server_cpu_pct=tree.cpu_pct if tree else None,
            server_rss_mb=tree.rss_mb if tree else None,
            client_cpu_pct=client,
            other_cpu_pct=other,
            gpus=tuple(gpus),
        )
        with self._lock:
            self._samples.append(sample)
