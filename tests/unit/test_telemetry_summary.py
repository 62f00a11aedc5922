"""Telemetry without clocks or processes: summaries, MLflow series points, contention warnings,
the GPU probe and the fingerprint on scripted NVML (tests/support/fake_nvml.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest
from support import fake_nvml

from sentinel_exp.telemetry import (
    GpuProbe,
    GpuReading,
    ProcessTreeProbe,
    Sample,
    SeriesPoint,
    contention_warnings,
    environment_fingerprint,
    gpu_energy,
    series_points,
    summarize_telemetry,
)
from sentinel_exp.telemetry.fingerprint import PACKAGES, package_version

FakeDevice, FakeNvml = fake_nvml.FakeDevice, fake_nvml.FakeNvml


# -- process tree discovery, on a scripted clock -------------------------------------------------


def test_discovery_after_the_first_scan_comes_within_half_a_second_then_keeps_to_its_budget():
    now = [0.0]
    probe = ProcessTreeProbe(os.getpid(), discovery_budget=1e-9, clock=lambda: now[0])  # any scan is "costly"
    probe.read()
    for t, scans in ((0.3, 1), (0.49, 1), (0.5, 2), (1.0, 2), (5.0, 2)):
        now[0] = t
        probe.read()
        assert probe.discoveries == scans, t


# -- GPU probe with scripted NVML ---------------------------------------------------------


def test_gpu_probe_enumerates_devices():
    nv = FakeNvml(
        [
            FakeDevice(),
            FakeDevice(name="NVIDIA GeForce GTX 1050", total_mb=3019, name_as_bytes=True),
        ]
    )
    p = GpuProbe(nvml=nv)
    assert p.open() is True and p.available and p.reason is None
    assert [(d.index, d.name) for d in p.devices] == [
        (0, "NVIDIA H100 80GB HBM3"),
        (1, "NVIDIA GeForce GTX 1050"),
    ]
    assert p.devices[1].memory_total_mb == pytest.approx(3019)
    assert p.driver_version == "580.159.04" and p.cuda_driver_version == "12.8"
    assert p.inventory() == [
        ("NVIDIA H100 80GB HBM3", 81559.0),
        ("NVIDIA GeForce GTX 1050", 3019.0),
    ]
    r = p.read()
    assert [g.index for g in r] == [0, 1]
    g = r[0]
    assert (g.util_pct, g.mem_used_mb, g.power_w, g.temp_c, g.sm_clock_mhz, g.throttle_reasons) == (
        50.0,
        1000.0,
        100.0,
        40.0,
        1980.0,
        1,
    )
    assert g.energy_mj == 5_000_000
    assert p.read()[0].energy_mj == 5_001_000
    assert p.open() is True and nv.calls["nvmlInit"] == 1  # idempotent
    p.close()
    p.close()
    assert nv.shutdowns == 1 and p.read() == ()
    assert p.devices  # inventory survives close


def test_cuda_version_falls_back_to_v1():
    nv = FakeNvml(missing=["nvmlSystemGetCudaDriverVersion_v2"], cuda=12040)
    p = GpuProbe(nvml=nv)
    p.open()
    assert p.cuda_driver_version == "12.4"


def test_not_supported_fields_are_none_and_noted_once():
    nv = FakeNvml(
        [FakeDevice(), FakeDevice()],
        not_supported=["nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption"],
    )
    p = GpuProbe(nvml=nv)
    p.open()
    reads = [p.read() for _ in range(5)]
    assert all(g.power_w is None and g.energy_mj is None for r in reads for g in r)
    assert all(g.util_pct == 50.0 and g.temp_c == 40.0 for r in reads for g in r)
    # queried once per device, never retried
    assert nv.calls["nvmlDeviceGetPowerUsage"] == 2
    assert nv.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2
    assert nv.calls["nvmlDeviceGetUtilizationRates"] == 10
    assert sorted(p.unsupported) == [
        (0, "energy_mj"),
        (0, "power_w"),
        (1, "energy_mj"),
        (1, "power_w"),
    ]
    assert len(p.notes) == 4
    assert sum("gpu0 power_w" in n and "NotSupported" in n for n in p.notes) == 1


def test_clock_reasons_fall_back_to_throttle_reasons():
    for nv in (
        FakeNvml(missing=["nvmlDeviceGetCurrentClocksEventReasons"]),
        FakeNvml(not_supported=["nvmlDeviceGetCurrentClocksEventReasons"]),
    ):
        p = GpuProbe(nvml=nv)
        p.open()
        assert [p.read()[0].throttle_reasons for _ in range(3)] == [1, 1, 1]
        assert p.unsupported == [] and nv.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3


# The fakes' settings, not the fakes: each run of the test (mutmut runs the suite more than once in
# one process) counts on a fresh one.
@pytest.mark.parametrize(
    ("fake", "fragment", "shutdowns"),
    [
        ({"init_error": fake_nvml.NVMLError_LibraryNotFound}, "not found", 0),
        ({"init_error": fake_nvml.NVMLError_DriverNotLoaded}, "not loaded", 0),
        ({"init_error": RuntimeError}, "initialisation failed", 0),
        ({"devices": []}, "no usable GPU", 1),  # NVML came up, so it is shut down
    ],
)
def test_gpu_unavailable_reasons(fake, fragment, shutdowns):
    nv = FakeNvml(**fake)
    p = GpuProbe(nvml=nv)
    assert p.open() is False
    assert not p.available and fragment in p.reason
    assert p.read() == ()
    p.close()  # no exception
    assert nv.shutdowns == shutdowns


def test_gpu_probe_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    p = GpuProbe()
    assert p.open() is False
    assert "pynvml" in p.reason


def test_real_pynvml_without_driver_is_unavailable():
    if Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi"):
        pytest.skip("an NVIDIA driver is present on this machine")
    p = GpuProbe()
    assert p.open() is False
    assert p.available is False and p.reason
    assert p.read() == ()
    p.close()
    tags = environment_fingerprint()
    assert tags["sentinel.gpu_available"] == "false"
    assert tags["sentinel.gpu_unavailable_reason"]


# -- pure summaries -----------------------------------------------------------------------------


def _s(
    i: int,
    phase: str = "measured",
    *,
    t0: float = 1000.0,
    dt: float = 0.1,
    cpu=None,
    srv=None,
    rss=None,
    gpus=(),
    client=None,
    other=None,
) -> Sample:
    return Sample(
        i,
        t0 + i * dt,
        50.0 + i * dt,
        phase,
        cpu,
        cpu,
        500.0 + i,
        10.0,
        srv,
        rss,
        client_cpu_pct=client,
        other_cpu_pct=other,
        gpus=tuple(gpus),
    )


def _g(idx: int, util=None, mem=None, power=None, energy=None, temp=None, clock=None) -> GpuReading:
    return GpuReading(idx, util, mem, power, energy, temp, clock, 0)


def test_summary_host_metrics_and_omissions():
    xs = [_s(0, "warmup", cpu=99.0, srv=400.0)] + [
        _s(i, cpu=c, srv=s_, rss=r)
        for i, (c, s_, r) in enumerate(
            [
                (10.0, 100.0, 50.0),
                (20.0, None, 70.0),
                (30.0, 50.0, 60.0),
                (None, None, None),
                (float("nan"), 0.0, 55.0),
            ],
            start=1,
        )
    ]
    m = summarize_telemetry(xs)  # phase="measured" by default: the warmup sample is ignored
    assert m == {
        "cpu_pct_mean": 20.0,
        "cpu_pct_max": 30.0,
        "server_cpu_pct_mean": 50.0,
        "server_cpu_pct_max": 100.0,
        "server_rss_mb_max": 70.0,
        "mem_used_mb_max": 505.0,
    }
    assert all(math.isfinite(v) for v in m.values())
    assert summarize_telemetry(xs, phase="nope") == {}
    assert summarize_telemetry(xs, phase=None)["cpu_pct_max"] == 99.0


def test_summary_multi_gpu_conventions():
    xs = [
        _s(0, gpus=[_g(0, 20, 1000, 100, 10_000, 50, 1000), _g(1, 60, 3000, 200, 20_000, 70, 2000)]),
        _s(1, gpus=[_g(0, 40, 1500, 150, 40_000, 55, 1200), _g(1, 80, 3500, 250, 60_000, 65, 1800)]),
    ]
    m = summarize_telemetry(xs, output_tokens=7)
    assert m["gpu_util_pct_mean"] == pytest.approx((40 + 60) / 2)  # mean over devices, then samples
    assert m["gpu_util_pct_max"] == pytest.approx(60)
    assert m["gpu_mem_mb_max"] == pytest.approx(5000)  # summed over devices
    assert m["gpu_power_w_mean"] == pytest.approx((300 + 400) / 2)  # summed over devices
    assert m["gpu_energy_j"] == pytest.approx((30_000 + 40_000) / 1000)
    assert m["energy_j_per_token"] == pytest.approx(70 / 7)
    assert m["gpu_temp_c_max"] == 70
    assert m["gpu_sm_clock_mhz_mean"] == pytest.approx((1500 + 1500) / 2)


def test_energy_falls_back_to_power_integral():
    xs = [_s(i, gpus=[_g(0, power=100.0)]) for i in range(11)]  # 100 W for 1.0 s
    est = gpu_energy(xs)
    assert est.method == "power_integral" and est.joules == pytest.approx(100.0)
    m = summarize_telemetry(xs, output_tokens=50)
    assert m["gpu_energy_j"] == pytest.approx(100.0)
    assert m["energy_j_per_token"] == pytest.approx(2.0)
    # counter going backwards (driver reload) also falls back
    back = [_s(i, gpus=[_g(0, power=50.0, energy=9000 - i)]) for i in range(3)]
    assert gpu_energy(back) == (pytest.approx(10.0), "power_integral")
    # one counter device + one power-only device
    mixed = [_s(i, gpus=[_g(0, energy=1000 * i), _g(1, power=10.0)]) for i in range(3)]
    assert gpu_energy(mixed) == (pytest.approx(2.0 + 2.0), "mixed")
    assert gpu_energy([_s(0, gpus=[_g(0, energy=5)])]) == (None, "none")  # one sample


def test_contention_warnings_name_the_client_or_the_bystanders():
    assert contention_warnings({"client_cpu_pct_mean": 89.9, "other_cpu_pct_mean": 49.9}, n_cpus=2) == []
    [client] = contention_warnings({"client_cpu_pct_mean": 97.0}, n_cpus=2)
    assert client.startswith("the load generator used 97% of a core on average while measuring")
    [other] = contention_warnings({"other_cpu_pct_mean": 120.0, "client_cpu_pct_mean": 10.0}, n_cpus=2)
    assert other.startswith("other processes kept 120% of a core busy on average (of 200% on 2 cores)")
    assert contention_warnings({}, n_cpus=2) == []
    [early] = contention_warnings({"other_cpu_pct_mean": 120.0}, n_cpus=2, when="before measuring")
    assert early.startswith("other processes kept 120% of a core busy on average (of 200% on 2 cores) before measuring")


def test_bystanders_count_by_their_share_of_the_machine():
    # Half a core on 2 cores is a quarter of the machine; on 16 cores it takes four cores.
    assert contention_warnings({"other_cpu_pct_mean": 60.0}, n_cpus=2)
    assert contention_warnings({"other_cpu_pct_mean": 60.0}, n_cpus=16) == []
    assert contention_warnings({"other_cpu_pct_mean": 399.0}, n_cpus=16) == []
    assert contention_warnings({"other_cpu_pct_mean": 400.0}, n_cpus=16)
    assert contention_warnings({"other_cpu_pct_mean": 49.0}, n_cpus=1) == []  # at least half a core


def test_summary_of_client_and_other_cpu():
    xs = [_s(0, "warmup", client=100.0, other=300.0)] + [
        _s(i, client=c, other=o) for i, (c, o) in enumerate([(20.0, 0.0), (40.0, None), (60.0, 90.0)], 1)
    ]
    m = summarize_telemetry(xs)
    assert m["client_cpu_pct_mean"] == pytest.approx(40.0) and m["client_cpu_pct_max"] == 60.0
    assert m["other_cpu_pct_mean"] == pytest.approx(45.0)


def test_energy_per_token_needs_both_positive():
    xs = [_s(i, gpus=[_g(0, energy=1000.0 * i)]) for i in range(3)]
    assert summarize_telemetry(xs, output_tokens=4)["energy_j_per_token"] == pytest.approx(0.5)
    for tokens in (None, 0):
        assert "energy_j_per_token" not in summarize_telemetry(xs, output_tokens=tokens)
    flat = [_s(i, gpus=[_g(0, energy=1000.0)]) for i in range(3)]
    m = summarize_telemetry(flat, output_tokens=4)
    assert m["gpu_energy_j"] == 0.0 and "energy_j_per_token" not in m


def test_series_points():
    one = [_s(i, cpu=10.0 * i, srv=5.0, rss=20.0, gpus=[_g(0, util=i, mem=100, power=60)]) for i in range(3)]
    pts = series_points(one)
    assert all(isinstance(p, SeriesPoint) for p in pts)
    keys = {p.key for p in pts}
    assert {
        "cpu_pct",
        "server_cpu_pct",
        "server_rss_mb",
        "gpu_util_pct",
        "gpu_mem_mb",
        "gpu_power_w",
    } <= keys
    assert not any(k.startswith("gpu0") for k in keys)
    util = [p for p in pts if p.key == "gpu_util_pct"]
    assert [(p.value, p.step) for p in util] == [(0.0, 0), (1.0, 1), (2.0, 2)]
    assert [p.timestamp_ms for p in util] == [1_000_000, 1_000_100, 1_000_200]
    assert all(isinstance(p.timestamp_ms, int) for p in pts)

    two = [_s(i, gpus=[_g(0, util=10, power=100), _g(1, util=30, power=50)]) for i in range(2)]
    pts2 = series_points(two)
    by = {(p.key, p.step): p.value for p in pts2}
    assert by[("gpu0_util_pct", 1)] == 10 and by[("gpu1_util_pct", 1)] == 30
    assert by[("gpu_util_pct", 0)] == 20 and by[("gpu_power_w", 0)] == 150
    assert ("gpu_mem_mb", 0) not in by  # no data, no point
    assert all(math.isfinite(p.value) for p in pts2)
    assert series_points(two, phase="warmup") == []


def test_sample_to_dict_is_json_serialisable():
    x = _s(0, cpu=1.0, gpus=[_g(0, util=5)])
    d = json.loads(json.dumps(x.to_dict()))
    assert d["phase"] == "measured" and d["gpus"][0]["util_pct"] == 5


# -- fingerprint --------------------------------------------------------------------------------


def test_fingerprint_with_gpus():
    nv = FakeNvml([FakeDevice(), FakeDevice(name="NVIDIA GeForce GTX 1050", total_mb=3019)])
    probe = GpuProbe(nvml=nv)
    tags = environment_fingerprint(probe)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    assert all(k.startswith("sentinel.") for k in tags)
    assert tags["sentinel.gpu_available"] == "true"
    assert tags["sentinel.gpu_name"] == "NVIDIA H100 80GB HBM3,NVIDIA GeForce GTX 1050"
    assert tags["sentinel.gpu_count"] == "2"
    assert tags["sentinel.gpu_vram_mb"] == "81559,3019"
    assert tags["sentinel.gpu_driver"] == "580.159.04"
    assert tags["sentinel.cuda_driver_version"] == "12.8"
    assert "sentinel.gpu_unavailable_reason" not in tags
    assert tags["sentinel.cpu_cores_logical"] == str(psutil.cpu_count())
    assert float(tags["sentinel.ram_gb"]) > 0.1
    assert tags["sentinel.python"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["sentinel.pkg.psutil"] == psutil.__version__
    assert {f"sentinel.pkg.{p}" for p in PACKAGES} <= set(tags)
    assert tags["sentinel.cpu_model"]
    assert nv.shutdowns == 0  # a caller's probe stays open


def test_package_version_absent():
    assert package_version("definitely-not-installed-sentinel-xyz") == "absent"


def test_a_llama_cpp_server_with_more_threads_than_free_cores_is_told_how_many_to_use():
    # One core of two taken: two llama.cpp threads stall on it, one does not.
    [_, hint] = contention_warnings({"other_cpu_pct_mean": 99.0}, n_cpus=2, server_threads=2)
    assert hint.startswith("the server's 2 llama.cpp threads wait for each other at every step")
    assert "about 1.0 of 2 cores taken, try options.num_thread=1" in hint
    assert len(contention_warnings({"other_cpu_pct_mean": 99.0}, n_cpus=2, server_threads=1)) == 1
    # 3.5 of 16 cores busy leaves 12 free: 8 threads fit, 16 do not.
    assert len(contention_warnings({"other_cpu_pct_mean": 350.0}, n_cpus=16, server_threads=8)) == 0
    [_, hint] = contention_warnings({"other_cpu_pct_mean": 450.0}, n_cpus=16, server_threads=16)
    assert "try options.num_thread=11" in hint
    # No bystanders worth a warning, or a server of unknown threading: no hint.
    assert contention_warnings({"other_cpu_pct_mean": 40.0}, n_cpus=2, server_threads=2) == []
    assert len(contention_warnings({"other_cpu_pct_mean": 99.0}, n_cpus=2, server_threads=None)) == 1


def test_the_threads_of_each_server_kind(monkeypatch):
    import psutil

    from sentinel_exp.names import ServerKind
    from sentinel_exp.run.conclusion import llama_threads
    from sentinel_exp.serve.threads import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert llama_threads(ServerKind.ollama, {"num_thread": 3}) == 3
    assert llama_threads(ServerKind.ollama, {}) == (psutil.cpu_count(logical=False) or psutil.cpu_count())
    assert llama_threads(ServerKind.embedded, {}) == len(psutil.Process().cpu_affinity())
    monkeypatch.setenv(THREADS_ENV, "1")
    assert llama_threads(ServerKind.embedded, {}) == 1
    assert llama_threads(ServerKind.embedded, {"num_thread": 2}) == 2  # what the run sends wins
    assert llama_threads(ServerKind.simulated, {"num_thread": 2}) is None
    assert llama_threads(ServerKind.openai, {}) is None
