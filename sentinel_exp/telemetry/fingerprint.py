"""Environment fingerprint as MLflow tags (all values are strings)."""

from __future__ import annotations

import importlib.metadata
import platform

import psutil

from .gpu import GpuProbe

PACKAGES = (
    "hydra-core",
    "omegaconf",
    "httpx",
    "mlflow",
    "psutil",
    "nvidia-ml-py",
    "llama-cpp-python",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass  # not Linux
    return platform.processor() or platform.machine() or "unknown"


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _gpu_tags(probe: GpuProbe) -> dict[str, str]:
    devs = probe.devices if probe.available else []
    tags = {
        "sentinel.gpu_available": "true" if devs else "false",
        "sentinel.gpu_name": ",".join(d.name for d in devs) or "none",
        "sentinel.gpu_count": str(len(devs)),
        "sentinel.gpu_vram_mb": ",".join(str(round(d.memory_total_mb)) for d in devs) or "0",
        "sentinel.gpu_driver": probe.driver_version or "n/a",
        "sentinel.cuda_driver_version": probe.cuda_driver_version or "n/a",
    }
    if not devs:
        tags["sentinel.gpu_unavailable_reason"] = probe.reason or "no GPU detected"
    return tags


def environment_fingerprint(gpu_probe: GpuProbe | None = None) -> dict[str, str]:
    """Host, Python, package and GPU facts as `sentinel.*` tags. Never raises for a missing GPU.

    Pass the run's GpuProbe to avoid a second NVML init; it is opened if needed and left open.
    Without one, a temporary probe is opened and closed here.
    """
    vm = psutil.virtual_memory()
    tags = {
        "sentinel.cpu_model": cpu_model(),
        "sentinel.cpu_cores_logical": str(psutil.cpu_count(logical=True) or "unknown"),
        "sentinel.cpu_cores_physical": str(psutil.cpu_count(logical=False) or "unknown"),
        "sentinel.ram_gb": f"{vm.total / 1024**3:.1f}",
        "sentinel.os": platform.platform(),
        "sentinel.python": platform.python_version(),
    }
    for dist in PACKAGES:
        tags[f"sentinel.pkg.{dist}"] = package_version(dist)
    probe = gpu_probe if gpu_probe is not None else GpuProbe()
    try:
        probe.open()
        tags.update(_gpu_tags(probe))
    finally:
        if gpu_probe is None:
            probe.close()
    return tags
