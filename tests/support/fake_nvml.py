"""A scripted stand-in for the pynvml module, for GpuProbe/Sampler tests without a GPU.

Exception classes mirror pynvml's hierarchy: every NVMLError_* subclasses NVMLError, which
subclasses Exception. Values are scripted per device; each call is counted in `calls`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

NVML_TEMPERATURE_GPU = 0  # same values as pynvml
NVML_CLOCK_SM = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13


class NVMLError(Exception):
    value = 999

    def __str__(self) -> str:
        return type(self).__name__.removeprefix("NVMLError_").replace("_", " ") or "NVML Error"


class NVMLError_NotSupported(NVMLError):
    value = NVML_ERROR_NOT_SUPPORTED


class NVMLError_LibraryNotFound(NVMLError):
    value = NVML_ERROR_LIBRARY_NOT_FOUND


class NVMLError_DriverNotLoaded(NVMLError):
    value = NVML_ERROR_DRIVER_NOT_LOADED


class NVMLError_FunctionNotFound(NVMLError):
    value = NVML_ERROR_FUNCTION_NOT_FOUND


MiB = 1024 * 1024


@dataclass
class FakeDevice:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    total_mb: int = 81559
    util: Sequence[int] = (50,)  # n-th read returns util[n], then holds the last value
    used_mb: Sequence[float] = (1000.0,)
    power_mw: Sequence[int] = (100_000,)
    energy_start_mj: int = 5_000_000
    energy_step_mj: int = 1000  # added on every read of the energy counter
    temp_c: int = 40
    sm_clock_mhz: int = 1980
    reasons: int = 0x1
    name_as_bytes: bool = False  # old pynvml returned bytes


class FakeNvml:
    """Module-like object: pass it as GpuProbe(nvml=FakeNvml(...))."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound

    def __init__(
        self,
        devices: Sequence[FakeDevice] | None = None,
        *,
        init_error: type[BaseException] | None = None,
        not_supported: Sequence[str] = (),
        missing: Sequence[str] = (),
        fail_after: dict[str, tuple[int, BaseException]] | None = None,
        driver: str = "580.159.04",
        cuda: int = 12080,
    ) -> None:
        self.devices = list(devices) if devices is not None else [FakeDevice()]
        self.init_error = init_error
        self.not_supported = set(not_supported)  # these functions raise NVMLError_NotSupported
        self.missing = set(missing)  # these names are absent (AttributeError), like old pynvml
        self.fail_after = dict(fail_after or {})  # name -> (ok calls, exception raised after)
        self.driver = driver
        self.cuda = cuda
        self.calls: Counter[str] = Counter()
        self._reads: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self.initialised = False
        self.shutdowns = 0

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def _enter(self, fn: str) -> None:
        with self._lock:
            self.calls[fn] += 1
            n = self.calls[fn]
        if fn in self.not_supported:
            raise NVMLError_NotSupported()
        if fn in self.fail_after:
            ok_calls, exc = self.fail_after[fn]
            if n > ok_calls:
                raise exc
        if not fn.startswith(("nvmlInit", "nvmlShutdown")) and not self.initialised:
            raise NVMLError("Uninitialized")

    def _nth(self, fn: str, idx: int, seq: Sequence[Any]) -> Any:
        with self._lock:
            n = self._reads[(fn, idx)]
            self._reads[(fn, idx)] += 1
        return seq[min(n, len(seq) - 1)]

    # -- system ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            raise self.init_error()
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= i < len(self.devices):
            raise NVMLError("Invalid Argument")
        return i  # the handle is just the index

    # -- device info -----------------------------------------------------------------------
    def nvmlDeviceGetName(self, h: int) -> str | bytes:
        self._enter("nvmlDeviceGetName")
        d = self.devices[h]
        return d.name.encode() if d.name_as_bytes else d.name

    def nvmlDeviceGetUUID(self, h: int) -> str:
        self._enter("nvmlDeviceGetUUID")
        return self.devices[h].uuid

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        self._enter("nvmlDeviceGetMemoryInfo")
        d = self.devices[h]
        used = int(self._nth("mem", h, d.used_mb) * MiB)
        total = d.total_mb * MiB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        self._enter("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self._nth("util", h, self.devices[h].util), memory=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._enter("nvmlDeviceGetPowerUsage")
        return self._nth("power", h, self.devices[h].power_mw)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption")
        d = self.devices[h]
        with self._lock:
            n = self._reads[("energy", h)]
            self._reads[("energy", h)] += 1
        return d.energy_start_mj + n * d.energy_step_mj

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature")
        assert sensor == NVML_TEMPERATURE_GPU
        return self.devices[h].temp_c

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        self._enter("nvmlDeviceGetClockInfo")
        assert clock == NVML_CLOCK_SM
        return self.devices[h].sm_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        self._enter("nvmlDeviceGetCurrentClocksEventReasons")
        return self.devices[h].reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        self._enter("nvmlDeviceGetCurrentClocksThrottleReasons")
        return self.devices[h].reasons
