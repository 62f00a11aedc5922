"""Remote telemetry from Prometheus exporters (sentinel_exp/telemetry/prometheus.py): parsing,
counter rates, the mapping onto the local sampler's quantities, several endpoints, bad text.

The node-exporter texts were captured from Debian's prometheus-node-exporter; the DCGM texts are
written in dcgm-exporter's format (this machine has no GPU). Expected figures are worked out from
the files' own lines with a regex, independently of prometheus_client's parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.compose import variant

from sentinel_exp.config.schema import typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.telemetry.prometheus import (
    ExpositionError,
    NodeFigures,
    PrometheusProbe,
    cpu_between,
    memory_of,
    parse_exposition,
)
from sentinel_exp.telemetry.sampler import HostReading, Sample
from sentinel_exp.telemetry.summary import gpu_energy, series_points, summarize_telemetry

DATA = Path(__file__).resolve().parents[1] / "data" / "prometheus"
NODE_A, NODE_B = (DATA / "node_a.txt").read_text(), (DATA / "node_b.txt").read_text()
DCGM_A, DCGM_B = (DATA / "dcgm.txt").read_text(), (DATA / "dcgm_b.txt").read_text()
MIB = 1024.0 * 1024.0


def raw(text: str, metric: str, **labels: str) -> float:
    """The value of the one line of `metric` with these labels, read with a regex."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"^{metric}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            found.append(float(m.group(2)))
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def node_of(text: str) -> NodeFigures:
    node = parse_exposition(text).node
    assert node is not None
    return node


def busy_total(text: str, cpu: str) -> tuple[float, float]:
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    seconds = {mode: raw(text, "node_cpu_seconds_total", cpu=cpu, mode=mode) for mode in modes}
    total = sum(seconds.values())
    return total - seconds["idle"] - seconds["iowait"], total


def served(pages: dict[str, list[str]]) -> Callable[[str], str]:
    """fetch(url) answering each URL's pages in turn (the last one again once they run out); an
    entry that is an exception is raised instead."""
    queues: dict[str, Iterator[str]] = {}

    def fetch(url: str) -> str:
        if url not in pages:
            raise ConnectionRefusedError(f"[Errno 111] Connection refused: {url}")
        queue = queues.setdefault(url, iter(pages[url]))
        page = next(queue, pages[url][-1])
        if isinstance(page, Exception):
            raise page
        return page

    return fetch


NODE_URL, DCGM_URL = "http://gpu-box:9100/metrics", "http://gpu-box:9400/metrics"


# -- parsing -----------------------------------------------------------------------------------
def test_node_exporter_text_gives_cpu_counters_and_memory():
    exposition = parse_exposition(NODE_A)
    assert exposition.gpus == () and exposition.node is not None
    cores = {cpu for cpu, _ in exposition.node.cpu_seconds}
    assert cores == {"0", "1"} and len(exposition.node.cpu_seconds) == 16  # 8 modes a core
    assert exposition.node.cpu_seconds[("1", "user")] == raw(NODE_A, "node_cpu_seconds_total", cpu="1", mode="user")
    assert exposition.node.mem_total_b == raw(NODE_A, "node_memory_MemTotal_bytes")
    assert exposition.node.mem_available_b == raw(NODE_A, "node_memory_MemAvailable_bytes")


def test_dcgm_text_maps_each_gpu_onto_the_local_gpu_fields():
    exposition = parse_exposition(DCGM_A)
    assert exposition.node is None
    assert [g.gpu for g in exposition.gpus] == ["0", "1"]
    rtx, gtx = exposition.gpus
    assert rtx.key == "GPU-5a1c3e9b-7f2d-4c8e-9b61-2d4f8a0c7e13"
    for metric, field in (
        ("DCGM_FI_DEV_GPU_UTIL", "util_pct"),
        ("DCGM_FI_DEV_FB_USED", "mem_used_mb"),
        ("DCGM_FI_DEV_POWER_USAGE", "power_w"),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "energy_mj"),
        ("DCGM_FI_DEV_GPU_TEMP", "temp_c"),
        ("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz"),
    ):
        assert rtx.values[field] == raw(DCGM_A, metric, gpu="0"), metric
    # The GTX 1050 has no energy counter: dcgm-exporter sends DCGM's int64 "blank", not a reading.
    assert raw(DCGM_A, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="1") > 9e18
    assert gtx.values["energy_mj"] is None and gtx.values["util_pct"] == raw(DCGM_A, "DCGM_FI_DEV_GPU_UTIL", gpu="1")


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Node Exporter</body></html>\n",  # the exporter's landing page, not /metrics
        '{"status": "success", "data": []}\n',  # Prometheus's JSON API
        'node_cpu_seconds_total{cpu="0",mode="idle" 12.5\n',  # an unclosed label set
        "node_load1 high\n",
    ],
)
def test_text_that_is_not_the_exposition_format_is_a_clear_error(text):
    with pytest.raises(ExpositionError) as caught:
        parse_exposition(text, NODE_URL)
    message = str(caught.value)
    assert message.startswith(f"{NODE_URL} did not answer in the Prometheus text format")
    assert repr(text.strip()[:20])[1:-1] in message  # what it began with


# -- counter rates -----------------------------------------------------------------------------
def test_cpu_percent_is_busy_time_over_all_time_between_two_scrapes():
    reading = cpu_between(node_of(NODE_A), node_of(NODE_B))
    assert reading is not None
    deltas = []
    for cpu in ("0", "1"):
        (busy0, total0), (busy1, total1) = busy_total(NODE_A, cpu), busy_total(NODE_B, cpu)
        deltas.append((busy1 - busy0, total1 - total0))
    overall = 100.0 * sum(d for d, _ in deltas) / sum(t for _, t in deltas)
    busiest = max(100.0 * d / t for d, t in deltas)
    assert reading.cpu_pct == pytest.approx(overall, abs=1e-3)
    assert reading.cpu_pct_max_core == pytest.approx(busiest, abs=1e-3)
    assert 0.0 <= reading.cpu_pct <= reading.cpu_pct_max_core <= 100.0


def test_a_counter_that_goes_back_or_cores_that_change_give_no_figure():
    a, b = node_of(NODE_A), node_of(NODE_B)
    assert cpu_between(b, a) is None  # the exporter or host restarted: counters went back
    one_core = node_of("\n".join(line for line in NODE_B.splitlines() if 'cpu="1"' not in line) + "\n")
    assert cpu_between(a, one_core) is None


def test_memory_used_is_total_minus_available_in_mib():
    memory = memory_of(node_of(NODE_A))
    total, available = raw(NODE_A, "node_memory_MemTotal_bytes"), raw(NODE_A, "node_memory_MemAvailable_bytes")
    assert memory is not None
    assert memory.mem_used_mb == pytest.approx((total - available) / MIB)
    assert memory.mem_pct == pytest.approx(100.0 * (total - available) / total, abs=1e-3)


# -- the probe: several endpoints, samples under the local names ------------------------------
def samples_from(readings: list[HostReading], dt: float = 1.0) -> list[Sample]:
    return [
        Sample(
            index=i,
            wall_time=1_700_000_000.0 + dt * i,
            mono_time=dt * i,
            phase="measured",
            cpu_pct=r.cpu.cpu_pct if r.cpu else None,
            cpu_pct_max_core=r.cpu.cpu_pct_max_core if r.cpu else None,
            mem_used_mb=r.memory.mem_used_mb if r.memory else None,
            mem_pct=r.memory.mem_pct if r.memory else None,
            server_cpu_pct=None,
            server_rss_mb=None,
            gpus=r.gpus,
        )
        for i, r in enumerate(readings)
    ]


def test_node_and_dcgm_endpoints_together_give_the_local_metric_names():
    probe = PrometheusProbe(
        [NODE_URL, DCGM_URL], served({NODE_URL: [NODE_A, NODE_B, NODE_B], DCGM_URL: [DCGM_A, DCGM_A, DCGM_B]})
    )
    assert probe.check() == [] and probe.usable  # the first scrape primes the CPU counters
    readings = [probe.read(), probe.read()]
    first, second = readings
    assert first.cpu == cpu_between(node_of(NODE_A), node_of(NODE_B))
    assert second.cpu is not None and second.cpu.cpu_pct == 0.0  # the same counters again: nothing ran
    assert [g.index for g in first.gpus] == [0, 1]
    samples = samples_from(readings)
    metrics = summarize_telemetry(samples)
    util = [raw(DCGM_A, "DCGM_FI_DEV_GPU_UTIL", gpu=g) for g in "01"] + [
        raw(DCGM_B, "DCGM_FI_DEV_GPU_UTIL", gpu=g) for g in "01"
    ]
    assert metrics["gpu_util_pct_max"] == max(sum(util[:2]) / 2, sum(util[2:]) / 2)
    fb_used = raw(DCGM_B, "DCGM_FI_DEV_FB_USED", gpu="0") + raw(DCGM_B, "DCGM_FI_DEV_FB_USED", gpu="1")
    assert metrics["gpu_mem_mb_max"] == fb_used
    memory = memory_of(node_of(NODE_B))
    assert memory is not None and metrics["mem_used_mb_max"] == pytest.approx(memory.mem_used_mb)
    # Energy: the RTX 3060's mJ counter differenced; the GTX 1050 (no counter) its power integrated.
    counter_j = (
        raw(DCGM_B, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="0")
        - raw(DCGM_A, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="0")
    ) / 1000.0
    integral_j = (
        1.0 * (raw(DCGM_A, "DCGM_FI_DEV_POWER_USAGE", gpu="1") + raw(DCGM_B, "DCGM_FI_DEV_POWER_USAGE", gpu="1")) / 2
    )
    energy = gpu_energy(samples)
    assert energy.method == "mixed" and energy.joules == pytest.approx(counter_j + integral_j)
    assert metrics["gpu_energy_j"] == pytest.approx(counter_j + integral_j)
    keys = {p.key for p in series_points(samples)}
    assert {"cpu_pct", "mem_used_mb", "gpu_util_pct", "gpu0_power_w", "gpu1_power_w"} <= keys


def test_gpus_of_several_dcgm_endpoints_are_numbered_in_url_order():
    other = "http://gpu-box-2:9400/metrics"
    probe = PrometheusProbe([other, DCGM_URL], served({DCGM_URL: [DCGM_A], other: [DCGM_B]}))
    assert probe.check() == []
    reading = probe.read()
    assert [g.index for g in reading.gpus] == [0, 1, 2, 3]
    assert [g.power_w for g in reading.gpus] == [
        raw(DCGM_B, "DCGM_FI_DEV_POWER_USAGE", gpu="0"),
        raw(DCGM_B, "DCGM_FI_DEV_POWER_USAGE", gpu="1"),
        raw(DCGM_A, "DCGM_FI_DEV_POWER_USAGE", gpu="0"),
        raw(DCGM_A, "DCGM_FI_DEV_POWER_USAGE", gpu="1"),
    ]
    assert reading.cpu is None and reading.memory is None  # no node-exporter among them


def test_check_drops_endpoints_that_fail_and_says_why():
    bad, empty, down = "http://gpu-box:8080/", "http://gpu-box:9200/metrics", "http://gpu-box:1/metrics"
    probe = PrometheusProbe(
        [down, bad, empty, NODE_URL],
        served(
            {bad: ["<html>not metrics</html>\n"], empty: ["# HELP up Up.\n# TYPE up gauge\nup 1\n"], NODE_URL: [NODE_A]}
        ),
    )
    problems = probe.check()
    assert len(problems) == 3
    assert problems[0].startswith(f"cannot scrape {down}: ConnectionRefusedError")
    assert problems[1].startswith(f"{bad} did not answer in the Prometheus text format")
    assert problems[2].startswith(f"{empty} serves none of the figures sentinel-exp maps")
    assert probe.urls == [NODE_URL] and probe.usable
    nothing = PrometheusProbe([down], served({}))
    assert len(nothing.check()) == 1 and not nothing.usable


def test_an_endpoint_failing_mid_run_costs_only_its_own_figures_noted_once():
    boom = OSError("HTTP 503 Service Unavailable")
    probe = PrometheusProbe(
        [NODE_URL, DCGM_URL], served({NODE_URL: [NODE_A, NODE_B], DCGM_URL: [DCGM_A, boom, boom, DCGM_B]})
    )
    assert probe.check() == []
    first, second, third = probe.read(), probe.read(), probe.read()
    assert first.gpus == () and second.gpus == () and len(third.gpus) == 2
    assert first.cpu is not None and first.memory is not None
    assert probe.notes == [f"{DCGM_URL}: a scrape failed, its figures recorded as None (HTTP 503 Service Unavailable)"]


def test_a_failed_node_scrape_primes_the_cpu_counters_again():
    probe = PrometheusProbe([NODE_URL], served({NODE_URL: [NODE_A, OSError("timed out"), NODE_B, NODE_B]}))
    assert probe.check() == []
    failed, primed, again = probe.read(), probe.read(), probe.read()
    assert failed.cpu is None and failed.memory is None
    assert primed.cpu is None and primed.memory is not None  # no interval across the gap
    assert again.cpu is not None and again.cpu.cpu_pct == 0.0


# -- configuration -----------------------------------------------------------------------------
def test_prometheus_url_takes_one_url_or_a_list_and_defaults_the_path():
    one = typed_config(variant("telemetry.prometheus_url=http://gpu-box:9100")).telemetry
    assert one.prometheus_urls() == ["http://gpu-box:9100/metrics"] and one.prometheus_interval_s == 1.0
    both = typed_config(
        variant("telemetry.prometheus_url=[http://gpu-box:9100/metrics,'https://gpu-box:9400/']")
    ).telemetry
    assert both.prometheus_urls() == ["http://gpu-box:9100/metrics", "https://gpu-box:9400/metrics"]
    assert typed_config(variant()).telemetry.prometheus_urls() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpu-box:9100", "telemetry.prometheus_url: 'gpu-box:9100' is not an http(s) URL with a host"),
        ("ftp://gpu-box/metrics", "is not an http(s) URL with a host"),
        ("'http://gpu-box:99999/metrics'", "'http://gpu-box:99999/metrics' is not a valid URL (Port out of range"),
        ("[]", "telemetry.prometheus_url must be a URL or a list of URLs (got [])"),
        ("[http://gpu-box:9100,7]", "telemetry.prometheus_url: 7 is not a URL"),
        ("{a:1}", "telemetry.prometheus_url must be a URL or a list of URLs"),
    ],
)
def test_a_bad_prometheus_url_is_a_config_error(value, message):
    with pytest.raises(ConfigError) as caught:
        typed_config(variant(f"telemetry.prometheus_url={value}"))
    assert message in str(caught.value)


def test_a_non_positive_scrape_interval_is_a_config_error():
    with pytest.raises(ConfigError, match=r"telemetry.prometheus_interval_s must be positive \(got 0.0\)"):
        typed_config(variant("telemetry.prometheus_interval_s=0"))
