"""NVIDIA GPU probe over NVML (pynvml, imported lazily; any module with its names works)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

_MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    uuid: str
    memory_total_mb: float  # MiB, as NVML counts bytes / 2**20


@dataclass(frozen=True)
class GpuReading:
    index: int
    util_pct: float | None
    mem_used_mb: float | None
    power_w: float | None
    energy_mj: float | None  # cumulative counter since driver load; difference two readings
    temp_c: float | None
    sm_clock_mhz: float | None
    throttle_reasons: int | None  # NVML clocks-event bitmask

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(v: Any) -> str:
    # nvidia-ml-py >= 11.515 returns str; older releases (and pynvml forks) return bytes.
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _cuda_version_str(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"  # NVML encodes 12.8 as 12080


def _is(nvml: Any, exc: BaseException, cls_name: str) -> bool:
    cls = getattr(nvml, cls_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


# Each field lists getters tried in order; the first that answers wins. A getter that is
# missing from the module (AttributeError) or raises falls through to the next.
_Getter = Callable[[Any, Any], Any]
_FIELDS: dict[str, tuple[_Getter, ...]] = {
    "util_pct": (lambda n, h: float(n.nvmlDeviceGetUtilizationRates(h).gpu),),
    "mem_used_mb": (lambda n, h: n.nvmlDeviceGetMemoryInfo(h).used / _MB,),
    "power_w": (lambda n, h: n.nvmlDeviceGetPowerUsage(h) / 1000.0,),  # mW
    "energy_mj": (lambda n, h: float(n.nvmlDeviceGetTotalEnergyConsumption(h)),),
    "temp_c": (lambda n, h: float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),),
    "sm_clock_mhz": (lambda n, h: float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),),
    "throttle_reasons": (
        lambda n, h: int(n.nvmlDeviceGetCurrentClocksEventReasons(h)),
        lambda n, h: int(n.nvmlDeviceGetCurrentClocksThrottleReasons(h)),  # pre-R535 name
    ),
}


class GpuProbe:
    """Reads per-GPU utilisation, memory, power, energy, temperature, clocks via NVML.

    Never raises to the caller. When NVML or a GPU is missing, `available` is False and
    `reason` says why; `read()` then returns (). A field whose query fails once (typically
    NVMLError_NotSupported on consumer cards) is reported as None from then on without being
    queried again, and listed once in `notes`/`unsupported`.
    """

    # nvml is the pynvml module (untyped) or a test's stand-in with the same functions.
    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._initialised = False
        self._open_lock = threading.Lock()
        self.opened = False
        self.available = False
        self.reason: str | None = "GPU probe not opened"
        self.devices: list[GpuDevice] = []
        self.driver_version: str | None = None
        self.cuda_driver_version: str | None = None
        self.notes: list[str] = []
        self.unsupported: list[tuple[int, str]] = []  # (device index, field)
        self._skip: set[tuple[int, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> bool:
        """Initialise NVML and enumerate devices; idempotent. Returns `available`."""
        # Locked: the sampler thread may be opening while the caller asks for a fingerprint;
        # the second caller must wait for the outcome, not read a half-initialised probe.
        with self._open_lock:
            if self.opened:
                return self.available
            try:
                self._open()
            except Exception as exc:  # a broken binding must not take the run down
                self._unavailable(f"GPU probe failed while opening: {type(exc).__name__}: {exc}")
            self.opened = True
        return self.available

    def _unavailable(self, reason: str) -> None:
        self.available = False
        self.reason = reason

    def _open(self) -> None:
        if self._nvml is None:
            try:
                import pynvml  # lazy: keeps telemetry importable on machines without it
            except Exception as exc:
                self._unavailable(f"nvidia-ml-py (pynvml) is not importable: {exc}")
                return
            self._nvml = pynvml
        nvml: Any = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:
            if _is(nvml, exc, "NVMLError_LibraryNotFound"):
                why = "NVML library (libnvidia-ml.so) not found: no NVIDIA driver installed"
            elif _is(nvml, exc, "NVMLError_DriverNotLoaded"):
                why = "NVIDIA driver is installed but not loaded"
            else:
                why = "NVML initialisation failed"
            self._unavailable(f"{why} ({type(exc).__name__}: {exc})")
            return
        self._initialised = True
        driver = self._try(getattr(nvml, "nvmlSystemGetDriverVersion", None))
        self.driver_version = _text(driver) if driver is not None else None
        for fn in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
            v = self._try(getattr(nvml, fn, None))
            if isinstance(v, int) and v > 0:
                self.cuda_driver_version = _cuda_version_str(v)
                break
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            self._unavailable(f"NVML could not count devices ({type(exc).__name__}: {exc})")
            return
        for i in range(count):
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(nvml.nvmlDeviceGetName(h))
            except Exception as exc:
                self.notes.append(f"gpu{i}: skipped, no handle ({type(exc).__name__}: {exc})")
                continue
            uuid = _text(self._try(getattr(nvml, "nvmlDeviceGetUUID", None), h) or "")
            mem = self._try(getattr(nvml, "nvmlDeviceGetMemoryInfo", None), h)
            total = mem.total / _MB if mem is not None else 0.0
            self._handles.append(h)
            self.devices.append(GpuDevice(i, name, uuid, float(total)))
        if not self.devices:
            self._unavailable("NVML is working but reports no usable GPU devices")
            return
        self.available = True
        self.reason = None

    def close(self) -> None:
        """Shut NVML down; safe to call twice. Device inventory stays readable."""
        if self._initialised:
            self._initialised = False
            self._try(getattr(self._nvml, "nvmlShutdown", None))

    def __enter__(self) -> GpuProbe:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sampling --------------------------------------------------------------------------
    def read(self) -> tuple[GpuReading, ...]:
        """One reading per device; () when unavailable or closed. Never raises."""
        if not (self.available and self._initialised):
            return ()
        return tuple(
            GpuReading(dev.index, **{f: self._field(dev.index, h, f) for f in _FIELDS})
            for dev, h in zip(self.devices, self._handles, strict=False)
        )

    def _field(self, idx: int, handle: Any, field: str) -> Any:
        if (idx, field) in self._skip:
            return None
        errors: list[str] = []
        for getter in _FIELDS[field]:
            try:
                return getter(self._nvml, handle)
            except Exception as exc:  # NVMLError_*, AttributeError for a missing function, ...
                errors.append(f"{type(exc).__name__}: {exc}".rstrip(": "))
        # Remember the failure: NVML answers the same way every time, and each failed call
        # costs driver round-trips on the sampler's clock.
        self._skip.add((idx, field))
        self.unsupported.append((idx, field))
        self.notes.append(f"gpu{idx} {field} unavailable, recorded as None ({'; '.join(errors)})")
        return None

    def inventory(self) -> list[tuple[str, float]]:
        """(name, total VRAM MiB) per device, the shape hardware.check_hardware takes."""
        return [(d.name, d.memory_total_mb) for d in self.devices]

    @staticmethod
    def _try(fn: Callable[..., Any] | None, *args: Any) -> Any:
        """fn(*args), or None if fn is missing or raises (optional facts only)."""
        try:
            return fn(*args) if fn is not None else None
        except Exception:
            return None
