"""Environment fingerprint as MLflow tags (all values are strings)."""

from __future__ import annotations

import importlib.metadata
import platform

import psutil

from sentinel_exp import tags as tag

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
        tag.GPU_AVAILABLE: "true" if devs else "false",
        tag.GPU_NAME: ",".join(d.name for d in devs) or "none",
        tag.GPU_COUNT: str(len(devs)),
        tag.GPU_VRAM_MB: ",".join(str(round(d.memory_total_mb)) for d in devs) or "0",
        tag.GPU_DRIVER: probe.driver_version or "n/a",
        tag.CUDA_DRIVER_VERSION: probe.cuda_driver_version or "n/a",
    }
    if not devs:
        tags[tag.GPU_UNAVAILABLE_REASON] = probe.reason or "no GPU detected"
    return tags


def environment_fingerprint(gpu_probe: GpuProbe | None = None) -> dict[str, str]:
    """Host, Python, package and GPU facts as `sentinel.*` tags. Never raises for a missing GPU.

    Pass the run's GpuProbe to avoid a second NVML init; it is opened if needed and left open.
    Without one, a temporary probe is opened and closed here.
    """
    vm = psutil.virtual_memory()
    tags = {
        tag.CPU_MODEL: cpu_model(),
        tag.CPU_CORES_LOGICAL: str(psutil.cpu_count(logical=True) or "unknown"),
        tag.CPU_CORES_PHYSICAL: str(psutil.cpu_count(logical=False) or "unknown"),
        tag.RAM_GB: f"{vm.total / 1024**3:.1f}",
        tag.OS: platform.platform(),
        tag.PYTHON: platform.python_version(),
    }
    for dist in PACKAGES:
        tags[tag.package(dist)] = package_version(dist)
    probe = gpu_probe if gpu_probe is not None else GpuProbe()
    try:
        probe.open()
        tags.update(_gpu_tags(probe))
    finally:
        if gpu_probe is None:
            probe.close()
    return tags
