"""Expected-hardware profiles checked against the GPUs actually detected."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sentinel_exp import tags as tag
from sentinel_exp.config.schema import HardwareConfig
from sentinel_exp.names import Placement
from sentinel_exp.telemetry.gpu import GpuProbe


@dataclass(frozen=True)
class HardwareCheck:
    matches: bool
    message: str
    tags: dict[str, str] = field(default_factory=dict)


def _describe_expected(e: HardwareConfig) -> str:
    parts = ["a GPU"]
    if e.gpu_name_pattern:
        parts.append(f"whose name matches /{e.gpu_name_pattern}/")
    if e.min_vram_mb:
        parts.append(f"with at least {e.min_vram_mb} MB VRAM")
    return " ".join(parts)


def _describe_found(gpus: list[tuple[str, float]], reason: str | None) -> str:
    if not gpus:
        return "no GPU" + (f" ({reason})" if reason else "")
    return ", ".join(f"{n} ({round(v)} MB)" for n, v in gpus)


def expects_gpu(expected: HardwareConfig) -> bool | None:
    """Whether the profile expects a GPU: true, false (cpu_only) or None (no expectation)."""
    if expected.expect_gpu is None and (expected.gpu_name_pattern or expected.min_vram_mb):
        return True  # a name or VRAM requirement only makes sense for a GPU
    return expected.expect_gpu


# A model at least this much in VRAM is on the GPU; at most 1 - this, on the CPU.
ON_GPU = 0.99


def placement_kind(gpu_fraction: float) -> Placement:
    """gpu, partial or cpu, from the fraction of the loaded model in VRAM (/api/ps size_vram/size)."""
    if gpu_fraction >= ON_GPU:
        return Placement.gpu
    return Placement.cpu if gpu_fraction <= 1 - ON_GPU else Placement.partial


def placement_warning(expected: HardwareConfig, gpu_fraction: float) -> str | None:
    """What to say when the profile expects a GPU and the model runs partly or wholly on the CPU."""
    kind = placement_kind(gpu_fraction)
    if expects_gpu(expected) is not True or kind == Placement.gpu:
        return None
    where = "wholly" if kind == Placement.cpu else "partly"
    return (
        f"Hardware profile '{expected.name}' expects a GPU, but the server had the model {where} on the CPU "
        f"during the measured phase (gpu_offload_fraction {gpu_fraction:.2f}): the latencies are not the GPU's"
    )


def check_hardware(
    expected: HardwareConfig,
    detected_gpus: Iterable[tuple[str, float]],
    gpu_available: bool,
    *,
    unavailable_reason: str | None = None,
) -> HardwareCheck:
    """Compare an expectation with what was detected. Mismatches are reported, never hidden."""
    gpus = [(str(n), float(v or 0)) for n, v in detected_gpus] if gpu_available else []
    found = _describe_found(gpus, unavailable_reason)
    prof = f"Hardware profile '{expected.name}'"
    wants = expects_gpu(expected)

    if wants is None:
        ok, msg = True, f"{prof} expects nothing in particular; found {found}."
    elif wants is False:
        ok = not gpus
        msg = (
            f"{prof} expects no GPU and found none."
            if ok
            else f"{prof} expects no GPU, but found {found}, so the run would not be CPU-only."
        )
    elif not gpus:
        ok, msg = False, f"{prof} expects {_describe_expected(expected)}, but found {found}."
    else:
        try:
            rx = re.compile(expected.gpu_name_pattern or "", re.IGNORECASE)
        except re.error as exc:
            return _result(
                expected,
                False,
                f"{prof} has an invalid gpu_name_pattern /{expected.gpu_name_pattern}/ ({exc}); found {found}.",
            )
        named = [g for g in gpus if rx.search(g[0])]
        fit = [g for g in named if not expected.min_vram_mb or g[1] >= expected.min_vram_mb]
        ok = bool(fit)
        want = _describe_expected(expected)
        if ok:
            msg = f"{prof} expects {want} and found {_describe_found(fit, None)}."
        elif named:
            msg = f"{prof} expects {want}, but found {found}: the name matches, the VRAM is too small."
        else:
            msg = f"{prof} expects {want}, but found {found}."
    return _result(expected, ok, msg)


def _result(expected: HardwareConfig, ok: bool, msg: str) -> HardwareCheck:
    tags = {
        tag.HARDWARE_PROFILE: expected.name,
        tag.HARDWARE_MATCH: "true" if ok else "false",
        tag.HARDWARE_MESSAGE: msg,
    }
    return HardwareCheck(ok, msg, tags)


def unchecked_remote(expected: HardwareConfig, target: str) -> HardwareCheck:
    """A profile for a target on another host: this machine's GPUs say nothing about it, so it is
    neither confirmed nor refuted (`sentinel.hardware_match=unchecked`)."""
    msg = (
        f"Hardware profile '{expected.name}' describes the target at {target}, another host: not checked "
        f"against this client's GPUs"
    )
    tags = {
        tag.HARDWARE_PROFILE: expected.name,
        tag.HARDWARE_MATCH: "unchecked",
        tag.HARDWARE_MESSAGE: msg,
    }
    return HardwareCheck(True, msg, tags)


def check_with_probe(expected: HardwareConfig, probe: GpuProbe) -> HardwareCheck:
    """check_hardware fed from a GpuProbe (opened here if it is not yet)."""
    probe.open()
    return check_hardware(expected, probe.inventory(), probe.available, unavailable_reason=probe.reason)
