"""Telemetry: real psutil, scripted NVML (tests/fake_nvml.py), pure summaries."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from sentinel_exp.telemetry import (
    GpuProbe,
    GpuReading,
    ProcessTreeProbe,
    Sample,
    Sampler,
    SeriesPoint,
    contention_warnings,
    environment_fingerprint,
    find_server_pid,
    gpu_energy,
    series_points,
    summarize_telemetry,
)
from sentinel_exp.telemetry import cpu as cpu_mod
from sentinel_exp.telemetry.fingerprint import PACKAGES, package_version

try:
    import fake_nvml  # tests/ on sys.path (rootdir-relative import mode)
except ImportError:  # tests/ became a package
    from tests import fake_nvml  # type: ignore[no-redef]

FakeDevice, FakeNvml = fake_nvml.FakeDevice, fake_nvml.FakeNvml

REPO = Path(__file__).resolve().parents[1]
BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n"


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=5)


def run_sampler(sampler: Sampler, *steps: tuple[float, str | None]) -> list[Sample]:
    """Start, then for each (seconds, phase-to-mark-after) sleep and mark; stop."""
    sampler.start()
    try:
        for secs, phase in steps:
            time.sleep(secs)
            if phase:
                sampler.mark_phase(phase)
    finally:
        samples = sampler.stop()
    return samples


# -- sampler schedule and phases ------------------------------------------------------------


def test_sample_count_matches_duration_over_interval():
    s = Sampler(interval_s=0.05, gpu=False)
    samples = run_sampler(s, (1.0, None))
    assert 18 <= len(samples) <= 22, len(samples)
    assert [x.index for x in samples] == list(range(len(samples)))
    gaps = [b.mono_time - a.mono_time for a, b in itertools.pairwise(samples)]
    assert all(g > 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, abs=0.01)
    # every sample carries host CPU and memory from real psutil
    assert all(x.cpu_pct is not None and 0 <= x.cpu_pct <= 100 for x in samples)
    assert all(x.cpu_pct_max_core >= x.cpu_pct - 1e-6 for x in samples)
    assert all(x.mem_used_mb > 10 and 0 < x.mem_pct < 100 for x in samples)
    assert all(x.server_cpu_pct is None and x.server_rss_mb is None for x in samples)
    assert 0.95 <= s.wall_s <= 1.5


def test_phases_follow_mark_phase():
    s = Sampler(interval_s=0.03, gpu=False)
    samples = run_sampler(s, (0.2, "warmup"), (0.3, "measured"), (0.3, None))
    phases = [x.phase for x in samples]
    # contiguous blocks in order, each with several samples
    blocks = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert blocks == ["setup", "warmup", "measured"]
    assert phases.count("setup") >= 3 and phases.count("warmup") >= 5
    assert phases.count("measured") >= 8
    # each sample carries exactly the phase current at its timestamp
    marks = s.phase_marks
    assert [m[0] for m in marks] == ["warmup", "measured"]
    for x in samples:
        expected = "setup"
        for name, _wall, mono in marks:
            if mono <= x.mono_time:
                expected = name
        assert x.phase == expected
    # Each phase is one unbroken stretch of samples, in the order the phases were marked.
    stretches = [name for i, name in enumerate(x.phase for x in samples) if i == 0 or samples[i - 1].phase != name]
    assert stretches == ["setup", "warmup", "measured"]


def test_mark_phase_and_stop_do_not_wait_for_slow_gpu_reads():
    class SlowProbe(GpuProbe):
        def read(self):
            time.sleep(0.15)  # like a sluggish driver call
            return super().read()

    probe = SlowProbe(nvml=FakeNvml())
    s = Sampler(interval_s=0.05, gpu_probe=probe).start()
    time.sleep(0.4)
    t0 = time.perf_counter()
    s.mark_phase("measured")
    mark_cost = time.perf_counter() - t0
    time.sleep(0.6)
    t0 = time.perf_counter()
    samples = s.stop()
    stop_cost = time.perf_counter() - t0
    assert mark_cost < 0.01
    assert stop_cost < 0.4  # at most the one read in flight
    # missed ticks are skipped, not bunched: ~1.0 s / 0.15 s per sample
    assert 4 <= len(samples) <= 8, len(samples)
    assert s.missed_ticks >= 4
    assert s.stats()["sample_wall_ms_max"] >= 150


def test_overhead_is_measured_and_small():
    s = Sampler(interval_s=0.02, gpu=False)
    samples = run_sampler(s, (1.0, None))
    assert len(samples) >= 40
    st = s.stats()
    assert st["samples"] == len(samples)
    assert 0 < s.sampling_cpu_s < 0.2
    assert s.overhead_core_fraction == pytest.approx(s.sampling_cpu_s / s.wall_s)
    assert 0 < s.overhead_core_fraction < 0.1  # at 50 Hz; ~10x less at the default 10 Hz


def test_stop_without_start_and_double_start():
    s = Sampler(gpu=False)
    assert s.stop() == []
    s.start()
    with pytest.raises(RuntimeError):
        s.start()
    s.stop()
    with pytest.raises(ValueError):
        Sampler(interval_s=0)


# -- server process tree ----------------------------------------------------------------------


def test_server_cpu_and_rss_of_a_busy_child():
    child = _spawn(BUSY.format(s=2.0))
    try:
        s = Sampler(interval_s=0.1, server_pid=child.pid, gpu=False)
        samples = run_sampler(s, (0.3, "measured"), (1.0, None))
    finally:
        _kill(child)
    m = summarize_telemetry(samples, phase="measured")
    assert m["server_cpu_pct_max"] > 50
    assert m["server_cpu_pct_mean"] > 40
    assert m["server_rss_mb_max"] > 5
    assert m["server_cpu_pct_max"] < 100 * psutil.cpu_count() + 20


def test_client_cpu_is_this_process_and_other_cpu_is_everyone_else():
    server = _spawn("import time; time.sleep(5)")  # an idle server
    other = _spawn(BUSY.format(s=1.5))  # a process that is neither server nor client
    try:
        s = Sampler(interval_s=0.1, server_pid=server.pid, gpu=False).start()
        s.mark_phase("measured")
        t = time.monotonic()
        while time.monotonic() - t < 0.6:  # the client (this process) busy on one core
            pass
        time.sleep(0.6)  # then idle while the other process still runs
        samples = s.stop()
    finally:
        _kill(server)
        _kill(other)
    # Relative bounds: on a busy CI machine the spinners share the cores with whatever else runs.
    busy = [x.client_cpu_pct for x in samples[1:5]]
    idle = [x.client_cpu_pct for x in samples[7:11]]
    assert sum(busy) / 4 > 40 and sum(busy) / 4 - sum(idle) / 4 > 30, (busy, idle)
    assert all(x.server_cpu_pct is not None and x.server_cpu_pct < 20 for x in samples)
    m = summarize_telemetry(samples)
    assert m["other_cpu_pct_mean"] > 30  # the spinning bystander: up to one core
    assert m["other_cpu_pct_mean"] > m["server_cpu_pct_mean"] + 20


def test_other_cpu_is_unknown_without_a_server_process():
    samples = run_sampler(Sampler(interval_s=0.1, gpu=False), (0.35, None))
    assert samples and all(x.other_cpu_pct is None and x.client_cpu_pct is not None for x in samples)


@pytest.mark.parametrize("use_procfs", [True, False], ids=["procfs", "psutil"])
def test_process_tree_sums_descendants(use_procfs):
    if use_procfs and not Path("/proc/self/stat").exists():
        pytest.skip("no procfs")
    # The parent only waits; the grandchild burns a core. The tree must show ~one core.
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY.format(s=2.0)!r}])"
    parent = _spawn(code)
    try:
        probe = ProcessTreeProbe(parent.pid, use_procfs=use_procfs, discovery_budget=None)
        assert probe.read() is not None  # priming read: no CPU figure yet
        time.sleep(0.5)  # the grandchild exists by now
        probe.read()
        time.sleep(0.4)
        r = probe.read()
        own = psutil.Process(parent.pid).cpu_percent(interval=0.2)
    finally:
        for c in psutil.Process(parent.pid).children(recursive=True):
            c.kill()
        _kill(parent)
    assert r is not None and r.n_procs == 2
    assert r.cpu_pct > 50
    assert own < 20  # so the >50 came from the descendant
    assert r.rss_mb > 10


def test_discovery_after_the_first_scan_comes_within_half_a_second_then_keeps_to_its_budget():
    now = [0.0]
    probe = ProcessTreeProbe(os.getpid(), discovery_budget=1e-9, clock=lambda: now[0])  # any scan is "costly"
    probe.read()
    for t, scans in ((0.3, 1), (0.49, 1), (0.5, 2), (1.0, 2), (5.0, 2)):
        now[0] = t
        probe.read()
        assert probe.discoveries == scans, t


def test_sampler_sees_a_grandchild_with_metered_discovery():
    # Default discovery budget: children are re-scanned only every few samples, yet the CPU of
    # a busy grandchild must show up in the tree's figures.
    busy = BUSY.format(s=2.5)
    code = f"import subprocess, sys, time; time.sleep(0.3)\nsubprocess.run([sys.executable, '-c', {busy!r}])\n"
    parent = _spawn(code)
    try:
        s = Sampler(interval_s=0.1, server_pid=parent.pid, gpu=False)
        samples = run_sampler(s, (0.7, "measured"), (1.5, None))
        busy_child = [c.pid for c in psutil.Process(parent.pid).children(recursive=True)]
    finally:
        for c in psutil.Process(parent.pid).children(recursive=True):
            c.kill()
        _kill(parent)
    # Found, and its spinning counted (a share of a core even when CI's other work competes).
    assert s._tree is not None and set(busy_child) <= set(s._tree._members)
    assert max(x.server_cpu_pct for x in samples if x.phase == "measured") > 30, [x.server_cpu_pct for x in samples]
    assert 1 < s._tree.discoveries < len(samples)


def test_server_vanishing_mid_run_is_tolerated():
    child = _spawn("import time; time.sleep(0.3)")
    s = Sampler(interval_s=0.05, server_pid=child.pid, gpu=False)
    samples = run_sampler(s, (1.0, None))
    child.wait(timeout=5)
    assert 18 <= len(samples) <= 22
    assert samples[0].server_rss_mb is not None and samples[0].server_rss_mb > 1
    assert samples[-1].server_cpu_pct is None and samples[-1].server_rss_mb is None
    assert ProcessTreeProbe(child.pid).read() is None
    assert ProcessTreeProbe(child.pid, use_procfs=False).read() is None


def test_process_tree_backends_agree_on_rss_and_membership():
    code = (
        "import subprocess, sys, time\n"
        "k = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    parent = _spawn(code)
    try:
        deadline = time.time() + 10
        while len(psutil.Process(parent.pid).children()) < 1 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the grandchild's interpreter is up
        a = ProcessTreeProbe(parent.pid, use_procfs=True).read()
        b = ProcessTreeProbe(parent.pid, use_procfs=False).read()
    finally:
        for c in psutil.Process(parent.pid).children(recursive=True):
            c.kill()
        _kill(parent)
    assert a is not None and b is not None
    assert a.n_procs == b.n_procs == 2
    assert a.rss_mb == pytest.approx(b.rss_mb, rel=0.05)
    assert a.cpu_pct is None and b.cpu_pct is None  # priming reads


def test_sampler_survives_a_failing_psutil_call(monkeypatch):
    real = psutil.virtual_memory
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise OSError("simulated /proc/meminfo failure")
        return real()

    monkeypatch.setattr(cpu_mod.psutil, "virtual_memory", flaky)
    s = Sampler(interval_s=0.05, gpu=False)
    samples = run_sampler(s, (0.6, None))
    assert 10 <= len(samples) <= 14
    missing = [x for x in samples if x.mem_used_mb is None]
    assert 0 < len(missing) < len(samples)
    assert all(x.cpu_pct is not None for x in samples)
    assert sum("memory failed" in n for n in s.notes) == 1
    assert s.error_counts["memory"] == len(missing)


def test_find_server_pid_by_port_and_name():
    code = textwrap.dedent(
        """
        import socket, sys, time
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        print(s.getsockname()[1], flush=True)
        time.sleep(30)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        assert find_server_pid(port) == child.pid
        assert find_server_pid(port, name=None) == child.pid
        # by name: some process with the child's name, the root of its same-named family
        name = psutil.Process(child.pid).name()
        pid = find_server_pid(None, name=name)
        assert pid is not None and psutil.Process(pid).name() == name
    finally:
        _kill(child)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
    assert find_server_pid(unused, name=None) is None
    assert find_server_pid(None, name="no-such-process-sentinel-xyz") is None


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


@pytest.mark.parametrize(
    ("nv", "fragment", "shutdowns"),
    [
        (FakeNvml(init_error=fake_nvml.NVMLError_LibraryNotFound), "not found", 0),
        (FakeNvml(init_error=fake_nvml.NVMLError_DriverNotLoaded), "not loaded", 0),
        (FakeNvml(init_error=RuntimeError), "initialisation failed", 0),
        (FakeNvml(devices=[]), "no usable GPU", 1),  # NVML came up, so it is shut down
    ],
)
def test_gpu_unavailable_reasons(nv, fragment, shutdowns):
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


# -- sampler with scripted NVML ---------------------------------------------------------------


def test_energy_within_measured_phase_equals_scripted_delta():
    nv = FakeNvml([FakeDevice(energy_step_mj=1000), FakeDevice(energy_step_mj=3000)])
    probe = GpuProbe(nvml=nv)
    s = Sampler(interval_s=0.05, gpu_probe=probe)
    samples = run_sampler(s, (0.3, "measured"), (0.6, "cooldown"), (0.2, None))
    measured = [x for x in samples if x.phase == "measured"]
    n = len(measured)
    assert n >= 9
    e0 = [x.gpus[0].energy_mj for x in measured]
    assert [b - a for a, b in itertools.pairwise(e0)] == [1000.0] * (n - 1)  # one read per sample
    est = gpu_energy(samples, "measured")
    assert est.method == "counter"
    assert est.joules == pytest.approx((n - 1) * (1.0 + 3.0))
    m = summarize_telemetry(samples, phase="measured", output_tokens=200)
    assert m["gpu_energy_j"] == pytest.approx((n - 1) * 4.0)
    assert m["energy_j_per_token"] == pytest.approx((n - 1) * 4.0 / 200)
    # the caller's probe is not shut down by the sampler
    assert nv.shutdowns == 0 and probe.read()
    probe.close()
    assert nv.shutdowns == 1


def test_gpu_readings_follow_script_and_arbitrary_errors_do_not_kill_sampler():
    nv = FakeNvml(
        [FakeDevice(util=(10, 20, 30, 40))],
        fail_after={"nvmlDeviceGetUtilizationRates": (4, RuntimeError("boom"))},
    )
    s = Sampler(interval_s=0.05, gpu_probe=GpuProbe(nvml=nv))
    samples = run_sampler(s, (1.0, None))
    assert 18 <= len(samples) <= 22
    utils = [x.gpus[0].util_pct for x in samples]
    assert utils[:4] == [10.0, 20.0, 30.0, 40.0]
    assert all(u is None for u in utils[4:])
    assert all(x.gpus[0].power_w == 100.0 for x in samples)  # other fields unaffected
    assert nv.calls["nvmlDeviceGetUtilizationRates"] == 5  # the failing call is not retried
    assert sum("util_pct" in n and "boom" in n for n in s.notes) == 1


def test_a_probe_raising_on_every_read_does_not_kill_sampler():
    class Broken(GpuProbe):
        n = 0

        def read(self):
            Broken.n += 1
            if Broken.n > 3:
                raise ZeroDivisionError("mid-run failure")
            return super().read()

    s = Sampler(interval_s=0.05, gpu_probe=Broken(nvml=FakeNvml()))
    samples = run_sampler(s, (0.8, None))
    assert 14 <= len(samples) <= 18
    assert [len(x.gpus) for x in samples[:3]] == [1, 1, 1]
    assert all(x.gpus == () and x.cpu_pct is not None for x in samples[3:])
    assert sum("ZeroDivisionError" in n for n in s.notes) == 1
    assert s.error_counts["gpu"] == len(samples) - 3


def test_library_not_found_run_goes_on():
    nv = FakeNvml(init_error=fake_nvml.NVMLError_LibraryNotFound)
    probe = GpuProbe(nvml=nv)
    s = Sampler(interval_s=0.05, gpu_probe=probe)
    samples = run_sampler(s, (0.1, "measured"), (0.5, None))
    assert len(samples) >= 9 and all(x.gpus == () for x in samples)
    assert any("GPU telemetry unavailable" in n and "not found" in n for n in s.notes)
    m = summarize_telemetry(samples, output_tokens=100)
    assert "cpu_pct_mean" in m
    assert not any(k.startswith(("gpu", "energy")) for k in m)
    tags = environment_fingerprint(probe)
    assert tags["sentinel.gpu_available"] == "false"
    assert tags["sentinel.gpu_count"] == "0" and tags["sentinel.gpu_name"] == "none"
    assert "not found" in tags["sentinel.gpu_unavailable_reason"]


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


def test_fingerprint_waits_for_an_open_in_progress():
    class SlowInit(FakeNvml):
        def nvmlInit(self) -> None:
            time.sleep(0.3)  # the sampler thread is still inside open() ...
            super().nvmlInit()

    nv = SlowInit()
    probe = GpuProbe(nvml=nv)
    s = Sampler(interval_s=0.05, gpu_probe=probe).start()
    time.sleep(0.05)
    tags = environment_fingerprint(probe)  # ... when the caller asks for the fingerprint
    s.stop()
    assert tags["sentinel.gpu_available"] == "true"
    assert nv.calls["nvmlInit"] == 1


def test_package_version_absent():
    assert package_version("definitely-not-installed-sentinel-xyz") == "absent"


# -- import isolation ---------------------------------------------------------------------------

_ISOLATION = r"""
import json, sys, time
BLOCKED = ["mlflow", "hydra", "httpx", "httpx_sse", "omegaconf", "numpy", "scipy", "matplotlib",
           "torch", "pandas", "rich", "starlette", "uvicorn"]
for name in BLOCKED:
    sys.modules[name] = None  # any import of these now raises ImportError
before = set(sys.modules)
import sentinel_exp.telemetry as t
import sentinel_exp.hardware as h
from sentinel_exp.config import HardwareConfig
from sentinel_exp.telemetry import cpu, gpu, sampler, summary, fingerprint
# exercise the lazy paths too
tags = t.environment_fingerprint()
s = t.Sampler(0.02, server_pid=None).start(); time.sleep(0.1); xs = s.stop()
t.summarize_telemetry(xs, phase=None); t.series_points(xs)
h.check_with_probe(HardwareConfig(), t.GpuProbe())
new = sorted({m.split(".")[0] for m in set(sys.modules) - before if sys.modules.get(m) is not None})
print(json.dumps({"new": new, "stdlib": sorted(sys.stdlib_module_names)}))
"""


def test_telemetry_imports_without_heavy_dependencies():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", _ISOLATION],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    stdlib = set(res["stdlib"])
    foreign = [m for m in res["new"] if m not in stdlib and m not in {"sentinel_exp", "psutil", "pynvml"}]
    assert foreign == [], foreign
    assert "sentinel_exp" in res["new"]
