"""Hardware profile checks: match, mismatch, cpu_only, auto, config mappings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import fake_nvml
from support.compose import variant

from sentinel_exp.checks.hardware import HardwareCheck, check_hardware, check_with_probe
from sentinel_exp.config.schema import HardwareConfig
from sentinel_exp.telemetry import GpuProbe

# The profiles under test are the shipped YAML files, so the check and the config cannot drift.
_CONF = Path(__file__).resolve().parents[2] / "conf" / "hardware"
PROFILES = {p.stem: HardwareConfig(**yaml.safe_load(p.read_text())) for p in _CONF.glob("*.yaml")}


H100 = ("NVIDIA H100 80GB HBM3", 81559)
GTX1050 = ("NVIDIA GeForce GTX 1050", 3019)
GTX1050_2GB = ("NVIDIA GeForce GTX 1050", 1998)
GTX1050TI = ("NVIDIA GeForce GTX 1050 Ti", 4040)
RTX3060 = ("NVIDIA GeForce RTX 3060", 12288)
RTX3060TI = ("NVIDIA GeForce RTX 3060 Ti", 8192)


def check(profile: str, gpus, available: bool = True, **kw) -> HardwareCheck:
    return check_hardware(PROFILES[profile], gpus, available, **kw)


@pytest.mark.parametrize(
    ("profile", "gpus"),
    [
        ("h100", [H100]),
        ("gtx1050_3gb", [GTX1050]),
        ("rtx3060_12gb", [RTX3060]),
        ("rtx3060_12gb", [("nvidia geforce rtx 3060", 12288)]),  # case-insensitive
        ("h100", [GTX1050, H100]),  # any one matching device is enough
    ],
)
def test_matching_hardware(profile, gpus):
    r = check(profile, gpus)
    assert r.matches is True
    assert r.tags["sentinel.hardware_profile"] == profile
    assert r.tags["sentinel.hardware_match"] == "true"
    assert r.message.endswith(".") and profile in r.message


@pytest.mark.parametrize(
    ("profile", "gpus", "says"),
    [
        ("gtx1050_3gb", [RTX3060], ["GTX 1050", "RTX 3060", "12288 MB"]),
        ("gtx1050_3gb", [GTX1050_2GB], ["at least 2800 MB", "1998 MB", "VRAM is too small"]),
        ("gtx1050_3gb", [GTX1050TI], ["GTX 1050 Ti"]),
        ("rtx3060_12gb", [RTX3060TI], ["RTX 3060 Ti", "8192 MB"]),
        ("h100", [RTX3060], ["H100", "RTX 3060"]),
    ],
)
def test_mismatching_hardware(profile, gpus, says):
    r = check(profile, gpus)
    assert r.matches is False
    assert r.tags["sentinel.hardware_match"] == "false"
    for fragment in says:
        assert fragment in r.message, r.message


def test_expected_gpu_but_none_available_names_the_reason():
    r = check("h100", [], available=False, unavailable_reason="NVML library not found")
    assert r.matches is False
    assert "found no GPU (NVML library not found)" in r.message
    # a device list is ignored when NVML says GPUs are unavailable
    assert check("h100", [H100], available=False).matches is False


def test_cpu_only():
    with_gpu = check("cpu_only", [GTX1050])
    assert with_gpu.matches is False
    assert "CPU-only" in with_gpu.message and "GTX 1050" in with_gpu.message
    assert with_gpu.tags["sentinel.hardware_match"] == "false"
    assert check("cpu_only", [], available=False).matches is True
    assert check("cpu_only", [], available=True).matches is True


def test_auto_always_matches():
    for gpus, available in (([], False), ([H100], True), ([GTX1050, RTX3060], True)):
        r = check("auto", gpus, available)
        assert r.matches is True and r.tags["sentinel.hardware_match"] == "true"
    assert "found NVIDIA H100 80GB HBM3 (81559 MB)" in check("auto", [H100]).message


def test_invalid_pattern_is_a_mismatch_not_a_crash():
    e = HardwareConfig("broken", True, "RTX (3060", None)
    r = check_hardware(e, [RTX3060], True)
    assert r.matches is False and "invalid gpu_name_pattern" in r.message


def test_pattern_or_vram_alone_implies_a_gpu():
    e = HardwareConfig("custom", None, None, 40000)
    assert check_hardware(e, [], False).matches is False
    assert check_hardware(e, [H100], True).matches is True
    assert check_hardware(e, [RTX3060], True).matches is False


def test_profiles_reach_the_check_as_composed():
    from sentinel_exp.config.schema import typed_config

    for name, profile in PROFILES.items():
        assert typed_config(variant(f"hardware={name}")).hardware == profile
    # A name alone sets no expectation: what to expect lives in conf/hardware/<name>.yaml.
    renamed = typed_config(variant("hardware.name=gtx1050_3gb")).hardware
    assert renamed == HardwareConfig("gtx1050_3gb")
    assert check_hardware(renamed, [], False).matches is True


def test_check_with_probe():
    probe = GpuProbe(nvml=fake_nvml.FakeNvml([fake_nvml.FakeDevice()]))
    assert check_with_probe(PROFILES["h100"], probe).matches is True
    assert check_with_probe(PROFILES["cpu_only"], probe).matches is False
    missing = GpuProbe(nvml=fake_nvml.FakeNvml(init_error=fake_nvml.NVMLError_LibraryNotFound))
    r = check_with_probe(PROFILES["gtx1050_3gb"], missing)
    assert r.matches is False and "not found" in r.message
