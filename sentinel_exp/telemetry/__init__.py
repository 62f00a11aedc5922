"""Telemetry: host CPU/memory, server process tree and NVIDIA GPUs, sampled in a thread.

Importable with the standard library and psutil only; pynvml is imported lazily by GpuProbe, and
prometheus_client only by prometheus.py (a remote target's exporters), which is not imported here.
No MLflow, Hydra, httpx, omegaconf or numpy here (tests enforce it).
"""

from .cpu import (
    CpuReading,
    MemoryReading,
    OwnProcessProbe,
    ProcessTreeProbe,
    ProcessTreeReading,
    SystemProbe,
    find_server_pid,
)
from .fingerprint import environment_fingerprint
from .gpu import GpuDevice, GpuProbe, GpuReading
from .sampler import HostProbe, HostReading, NoHost, Sample, Sampler
from .summary import (
    EnergyEstimate,
    SeriesPoint,
    contention_warnings,
    gpu_energy,
    series_points,
    summarize_telemetry,
)

__all__ = [
    "CpuReading",
    "EnergyEstimate",
    "GpuDevice",
    "GpuProbe",
    "GpuReading",
    "HostProbe",
    "HostReading",
    "MemoryReading",
    "NoHost",
    "OwnProcessProbe",
    "ProcessTreeProbe",
    "ProcessTreeReading",
    "Sample",
    "Sampler",
    "SeriesPoint",
    "SystemProbe",
    "contention_warnings",
    "environment_fingerprint",
    "find_server_pid",
    "gpu_energy",
    "series_points",
    "summarize_telemetry",
]
