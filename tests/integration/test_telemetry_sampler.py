"""Telemetry with real clocks and processes: the sampler thread, process trees of real children,
finding a server by its port, and the package importing without its heavy neighbours. The pure
parts (summaries, series, GPU probe and fingerprint on scripted NVML) are in
tests/unit/test_telemetry_summary.py.

Tests marked `timing` count samples or read CPU shares. With every core busy (other jobs on a
shared machine), the sampler thread wakes late and skips ticks, the test's own sleeps overrun, and a
spinning child gets only a share of a core: their bounds allow for that, and keep the ones that
no load can break (a skipped tick is never bunched, an idle process never looks busy).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from support import fake_nvml
from support.require import require

from sentinel_exp.telemetry import (
    GpuProbe,
    ProcessTreeProbe,
    Sample,
    Sampler,
    environment_fingerprint,
    find_server_pid,
    gpu_energy,
    summarize_telemetry,
)
from sentinel_exp.telemetry import cpu as cpu_mod

FakeDevice, FakeNvml = fake_nvml.FakeDevice, fake_nvml.FakeNvml

REPO = Path(__file__).resolve().parents[2]
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


@pytest.mark.timing
def test_sample_count_matches_duration_over_interval():
    s = Sampler(interval_s=0.05, gpu=False)
    samples = run_sampler(s, (1.0, None))
    assert 14 <= len(samples) <= 26, len(samples)  # 21 on an idle machine
    assert [x.index for x in samples] == list(range(len(samples)))
    gaps = [b.mono_time - a.mono_time for a, b in itertools.pairwise(samples)]
    assert all(g > 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, abs=0.02)  # a skipped tick makes one gap 0.1 s
    # every sample carries host CPU and memory from real psutil
    assert all(x.cpu_pct is not None and 0 <= x.cpu_pct <= 100 for x in samples)
    assert all(x.cpu_pct_max_core >= x.cpu_pct - 1e-6 for x in samples)
    assert all(x.mem_used_mb > 10 and 0 < x.mem_pct < 100 for x in samples)
    assert all(x.server_cpu_pct is None and x.server_rss_mb is None for x in samples)
    assert 0.95 <= s.wall_s <= 2.0


@pytest.mark.timing
def test_phases_follow_mark_phase():
    s = Sampler(interval_s=0.03, gpu=False)
    samples = run_sampler(s, (0.2, "warmup"), (0.3, "measured"), (0.3, None))
    phases = [x.phase for x in samples]
    # contiguous blocks in order, each with several samples (~7, ~10, ~10 on an idle machine; a
    # sampler woken late skips ticks, so the floors allow for a stall of 100 ms or more in each)
    blocks = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert blocks == ["setup", "warmup", "measured"]
    assert phases.count("setup") >= 3 and phases.count("warmup") >= 4
    assert phases.count("measured") >= 4
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


@pytest.mark.timing
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
    assert mark_cost < 0.05  # no wait for the 0.15 s read; a busy machine may delay the lock a little
    assert stop_cost < 0.5  # at most the one read in flight
    # missed ticks are skipped, not bunched: ~1.0 s / 0.15 s per sample
    assert 4 <= len(samples) <= 9, len(samples)
    assert s.missed_ticks >= 4
    assert s.stats()["sample_wall_ms_max"] >= 150


@pytest.mark.timing
def test_overhead_is_measured_and_small():
    s = Sampler(interval_s=0.02, gpu=False)
    samples = run_sampler(s, (1.0, None))
    assert len(samples) >= 30  # 51 on an idle machine
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


@pytest.mark.timing
def test_server_cpu_and_rss_of_a_busy_child():
    child = _spawn(BUSY.format(s=2.0))
    try:
        s = Sampler(interval_s=0.1, server_pid=child.pid, gpu=False)
        samples = run_sampler(s, (0.3, "measured"), (1.0, None))
    finally:
        _kill(child)
    m = summarize_telemetry(samples, phase="measured")
    # A spinning child takes a whole core on an idle machine, a share of one on a busy machine.
    assert m["server_cpu_pct_max"] > 30
    assert m["server_cpu_pct_mean"] > 20
    assert m["server_rss_mb_max"] > 5
    assert m["server_cpu_pct_max"] < 100 * psutil.cpu_count() + 20


@pytest.mark.timing
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
    assert sum(busy) / 4 > 25 and sum(busy) / 4 - sum(idle) / 4 > 20, (busy, idle)
    assert all(x.server_cpu_pct is not None and x.server_cpu_pct < 20 for x in samples)
    m = summarize_telemetry(samples)
    assert m["other_cpu_pct_mean"] > 20  # the spinning bystander: up to one core
    assert m["other_cpu_pct_mean"] > m["server_cpu_pct_mean"] + 15


def test_other_cpu_is_unknown_without_a_server_process():
    samples = run_sampler(Sampler(interval_s=0.1, gpu=False), (0.35, None))
    assert samples and all(x.other_cpu_pct is None and x.client_cpu_pct is not None for x in samples)


@pytest.mark.timing
@pytest.mark.parametrize("use_procfs", [True, False], ids=["procfs", "psutil"])
def test_process_tree_sums_descendants(use_procfs):
    if use_procfs:
        require(Path("/proc/self/stat").exists(), "no procfs (/proc) on this machine")
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
    assert r.cpu_pct > 25  # a core when idle; 44% seen with other jobs on both cores
    assert own < 20  # so the CPU came from the descendant
    assert r.rss_mb > 10


@pytest.mark.timing
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
    assert max(x.server_cpu_pct for x in samples if x.phase == "measured") > 20, [x.server_cpu_pct for x in samples]
    assert 1 < s._tree.discoveries < len(samples)


@pytest.mark.timing
def test_server_vanishing_mid_run_is_tolerated():
    child = _spawn("import time; time.sleep(0.3)")
    s = Sampler(interval_s=0.05, server_pid=child.pid, gpu=False)
    samples = run_sampler(s, (1.0, None))
    child.wait(timeout=5)
    assert 14 <= len(samples) <= 26
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


@pytest.mark.timing
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
    assert 8 <= len(samples) <= 17
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


# -- sampler with scripted NVML ---------------------------------------------------------------


@pytest.mark.timing
def test_energy_within_measured_phase_equals_scripted_delta():
    nv = FakeNvml([FakeDevice(energy_step_mj=1000), FakeDevice(energy_step_mj=3000)])
    probe = GpuProbe(nvml=nv)
    s = Sampler(interval_s=0.05, gpu_probe=probe)
    samples = run_sampler(s, (0.3, "measured"), (0.6, "cooldown"), (0.2, None))
    measured = [x for x in samples if x.phase == "measured"]
    n = len(measured)
    assert n >= 7  # 12 on an idle machine
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


@pytest.mark.timing
def test_gpu_readings_follow_script_and_arbitrary_errors_do_not_kill_sampler():
    nv = FakeNvml(
        [FakeDevice(util=(10, 20, 30, 40))],
        fail_after={"nvmlDeviceGetUtilizationRates": (4, RuntimeError("boom"))},
    )
    s = Sampler(interval_s=0.05, gpu_probe=GpuProbe(nvml=nv))
    samples = run_sampler(s, (1.0, None))
    assert 14 <= len(samples) <= 26
    utils = [x.gpus[0].util_pct for x in samples]
    assert utils[:4] == [10.0, 20.0, 30.0, 40.0]
    assert all(u is None for u in utils[4:])
    assert all(x.gpus[0].power_w == 100.0 for x in samples)  # other fields unaffected
    assert nv.calls["nvmlDeviceGetUtilizationRates"] == 5  # the failing call is not retried
    assert sum("util_pct" in n and "boom" in n for n in s.notes) == 1


@pytest.mark.timing
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
    assert 10 <= len(samples) <= 22
    assert [len(x.gpus) for x in samples[:3]] == [1, 1, 1]
    assert all(x.gpus == () and x.cpu_pct is not None for x in samples[3:])
    assert sum("ZeroDivisionError" in n for n in s.notes) == 1
    assert s.error_counts["gpu"] == len(samples) - 3


@pytest.mark.timing
def test_library_not_found_run_goes_on():
    nv = FakeNvml(init_error=fake_nvml.NVMLError_LibraryNotFound)
    probe = GpuProbe(nvml=nv)
    s = Sampler(interval_s=0.05, gpu_probe=probe)
    samples = run_sampler(s, (0.1, "measured"), (0.5, None))
    assert len(samples) >= 7 and all(x.gpus == () for x in samples)
    assert any("GPU telemetry unavailable" in n and "not found" in n for n in s.notes)
    m = summarize_telemetry(samples, output_tokens=100)
    assert "cpu_pct_mean" in m
    assert not any(k.startswith(("gpu", "energy")) for k in m)
    tags = environment_fingerprint(probe)
    assert tags["sentinel.gpu_available"] == "false"
    assert tags["sentinel.gpu_count"] == "0" and tags["sentinel.gpu_name"] == "none"
    assert "not found" in tags["sentinel.gpu_unavailable_reason"]


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


# -- import isolation ---------------------------------------------------------------------------

_ISOLATION = r"""
import json, sys, time
BLOCKED = ["mlflow", "hydra", "httpx", "httpx_sse", "omegaconf", "numpy", "scipy", "matplotlib",
           "torch", "pandas", "rich", "starlette", "uvicorn"]
for name in BLOCKED:
    sys.modules[name] = None  # any import of these now raises ImportError
before = set(sys.modules)
import sentinel_exp.telemetry as t
import sentinel_exp.checks.hardware as h
from sentinel_exp.config.schema import HardwareConfig
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


def test_a_run_monitor_releases_nvml_whether_or_not_it_sampled():
    from sentinel_exp.config.schema import HardwareConfig, TelemetryConfig
    from sentinel_exp.names import ServerKind
    from sentinel_exp.run.monitor import RunMonitor
    from sentinel_exp.run.servers import ServerHandle

    handle = ServerHandle(kind=ServerKind.simulated, url="http://127.0.0.1:9")
    h100 = HardwareConfig("h100", True, "H100", 70000)
    # lint=strict and a failed preflight end a run before sampling starts: close() still shuts NVML.
    nvml = fake_nvml.FakeNvml([fake_nvml.FakeDevice()])
    unsampled = RunMonitor(TelemetryConfig(), h100, handle, probe=GpuProbe(nvml=nvml))
    unsampled.check_hardware()
    unsampled.close()
    assert nvml.calls["nvmlInit"] == 1 and nvml.calls["nvmlShutdown"] == 1

    nvml = fake_nvml.FakeNvml([fake_nvml.FakeDevice()])
    sampled = RunMonitor(TelemetryConfig(interval_s=0.01), h100, handle, probe=GpuProbe(nvml=nvml))
    sampled.check_hardware()
    sampled.start()
    time.sleep(0.1)
    sampled.stop()
    taken = len(sampled.samples)
    sampled.close()  # after stop(): no second stop of the sampler, one shutdown
    assert taken >= 1 and len(sampled.samples) == taken
    assert nvml.calls["nvmlShutdown"] == 1
