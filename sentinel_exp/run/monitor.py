"""Telemetry for one run: the sampler, the hardware check and the environment fingerprint,
tied to the run's phases and named for MLflow (see docs/measurement.md, Telemetry metrics).

One GpuProbe serves the fingerprint, the hardware check and the sampler, so NVML is
initialised once; without a GPU or driver everything here degrades to "not available".
The target host's CPU, memory and GPUs come from this machine only when the target is this
machine; otherwise from its Prometheus exporters (telemetry.prometheus_url), or not at all
(sentinel.telemetry_source; docs/measurement.md, Remote telemetry).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from sentinel_exp import tags as tag
from sentinel_exp.checks.hardware import check_with_probe, expects_gpu, unchecked_remote
from sentinel_exp.config.schema import HardwareConfig, TelemetryConfig
from sentinel_exp.names import Phase, TelemetrySource
from sentinel_exp.run.servers import ServerHandle
from sentinel_exp.telemetry import (
    GpuProbe,
    Sample,
    Sampler,
    contention_warnings,
    environment_fingerprint,
    find_server_pid,
    gpu_energy,
    series_points,
    summarize_telemetry,
)
from sentinel_exp.telemetry.sampler import HostProbe, NoHost
from sentinel_exp.urls import is_loopback_url

log = logging.getLogger(__name__)

# Samples before the measured phase that make a fair early reading of the machine's load (half a
# second at the default interval); with fewer, the run's own check at the end is the only one.
EARLY_MIN_SAMPLES = 5


def server_pid(handle: ServerHandle) -> int | None:
    """The process whose CPU/RSS is the server's: ours, the configured one, or whoever listens
    on the server's loopback port (e.g. Ollama)."""
    if handle.pid is not None:
        return handle.pid
    if not is_loopback_url(handle.url):
        return None
    parts = urlsplit(handle.url)
    return find_server_pid(parts.port or (443 if parts.scheme == "https" else 80), name="ollama")


class ExporterClient:
    """GETs of Prometheus exporters' /metrics for the sampler thread, in exposition text format."""

    def __init__(self, urls: list[str], interval_s: float) -> None:
        # A scrape that hangs must not hold the sampler past its next tick for long.
        timeout = min(2.0, max(0.5, interval_s))
        # Proxies from the environment are for reaching other hosts, as the run's own client does.
        self._client = httpx.Client(timeout=timeout, trust_env=not all(map(is_loopback_url, urls)))

    def get(self, url: str) -> str:
        # Plain text format 0.0.4: what prometheus_client's parser reads, and what every exporter serves.
        response = self._client.get(url, headers={"Accept": "text/plain; version=0.0.4"})
        if response.is_error:
            raise OSError(f"HTTP {response.status_code} {response.reason_phrase}")
        return response.text

    def close(self) -> None:
        self._client.close()


class StudySampling:
    """One sampler for every arm of an interleaved study: the arms take turns, so each sample
    belongs to the arm whose block was running when it was taken, and a sampler per arm would only
    multiply the overhead. The first arm to start creates it; its phases are marked per arm."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid  # None when the arms' servers are several processes
        self.sampler: Sampler | None = None

    def mark(self, arm: int, phase: str) -> None:
        if self.sampler is not None:
            self.sampler.mark_phase(f"{phase}{_ARM}{arm}")

    def samples_of(self, arm: int) -> list[Sample]:
        """The study's samples as arm `arm` sees them: its own phases as they were, every other
        arm's time as `other`."""
        if self.sampler is None:
            return []
        mine = f"{_ARM}{arm}"
        return [
            dataclasses.replace(s, phase=s.phase[: -len(mine)] if s.phase.endswith(mine) else OTHER_ARM)
            for s in self.sampler.samples
        ]


_ARM = "#arm"
OTHER_ARM = "other arm"  # a study's sample taken while another arm's block ran


class RunMonitor:
    def __init__(
        self,
        telemetry_cfg: TelemetryConfig,
        hardware_cfg: HardwareConfig,
        handle: ServerHandle,
        probe: GpuProbe | None = None,
        study: tuple[StudySampling, int] | None = None,
    ) -> None:
        self.cfg = telemetry_cfg
        self.hardware_cfg = hardware_cfg
        self.handle = handle
        # The fingerprint and the hardware check describe the machine whether or not the GPU is
        # sampled, so the probe is always opened; telemetry.gpu only governs sampling.
        self.probe = probe if probe is not None else GpuProbe()
        self.study = study  # the study's shared sampling and this arm's index in it
        self.pid = server_pid(handle) if telemetry_cfg.enabled else None
        if study is not None and telemetry_cfg.enabled:
            self.pid = study[0].server_pid
        self.remote = not is_loopback_url(handle.url)
        self.exporters = telemetry_cfg.prometheus_urls()
        self.source = TelemetrySource.local  # decided by choose_host_source()
        self._host: HostProbe | None = None  # None: this machine's own counters
        self._http: ExporterClient | None = None
        self._sampler: Sampler | None = None
        self._stopped = False
        self._tags: dict[str, str] = {}
        self._notes: list[str] = []
        self.warnings: list[str] = []  # repeated under the results, where they cannot be missed
        self._contended = False

    def check_hardware(self) -> None:
        """Compare the hardware profile with what is detected; a mismatch warns and is tagged. A
        profile for a remote target is not judged by this machine's GPUs."""
        remote = not is_loopback_url(self.handle.url) and expects_gpu(self.hardware_cfg) is not None
        check = (
            unchecked_remote(self.hardware_cfg, self.handle.url)
            if remote
            else check_with_probe(self.hardware_cfg, self.probe)
        )
        self._tags.update(check.tags)
        if remote:
            self._notes.append(check.message)
        if not check.matches:
            log.warning("warning: %s The run is tagged %s=false.", check.message, tag.HARDWARE_MATCH)
            self._notes.append(check.message)
            self.warnings.append(check.message)

    def choose_host_source(self) -> None:
        """Where the target host's CPU, memory and GPU figures come from, decided before the run:
        its exporters when telemetry.prometheus_url is set and one answers; this machine when the
        target is this machine; otherwise nowhere, with a warning: this machine's figures are
        never logged as a remote host's."""
        if not self.cfg.enabled:
            return
        if self.exporters:
            self._http = ExporterClient(self.exporters, self.cfg.prometheus_interval_s)
            # Imported only here: prometheus_client costs a local run 75 ms of start-up.
            from sentinel_exp.telemetry.prometheus import PrometheusProbe

            probe = PrometheusProbe(self.exporters, self._http.get)
            for problem in probe.check():
                self._warn(f"telemetry.prometheus_url: {problem}")
            if probe.usable:
                self.source, self._host = TelemetrySource.prometheus, probe
                return
            self._http.close()
            self._http = None
            if not self.remote:
                self._warn("no Prometheus exporter answered: host telemetry comes from this machine, the target's")
                return
            self._unavailable("no Prometheus exporter in telemetry.prometheus_url answered")
        elif self.remote:
            self._unavailable(
                "telemetry.prometheus_url is not set (the target's node-exporter and dcgm-exporter, "
                "e.g. http://gpu-box:9100/metrics)"
            )

    def _unavailable(self, why: str) -> None:
        self.source, self._host = TelemetrySource.unavailable, NoHost()
        self._warn(
            f"the target {self.handle.url} is another host and {why}: its CPU, memory and GPU telemetry "
            f"is unavailable ({tag.TELEMETRY_SOURCE}={TelemetrySource.unavailable}); only this client's own CPU "
            f"is logged"
        )

    def _warn(self, text: str) -> None:
        log.warning("warning: %s", text)
        self._notes.append(text)
        self.warnings.append(text)

    def tags(self) -> dict[str, str]:
        tags = environment_fingerprint(self.probe)
        tags.update(self._tags)
        if self.cfg.enabled:
            tags[tag.TELEMETRY_SOURCE] = str(self.source)
        if self.pid is not None:
            tags[tag.SERVER_PID] = str(self.pid)
        elif self.cfg.enabled:
            tags[tag.SERVER_PID] = "unknown"
            if not self.remote:
                self._notes.append("server process not found: no server CPU/RSS (set server.pid)")
        return tags

    def start(self) -> None:
        if not self.cfg.enabled or (self.study is not None and self.study[0].sampler is not None):
            return
        local = self._host is None
        # A scrape is an HTTP request and a parse of the whole exposition (~20 ms of CPU for a
        # default node-exporter on a 2-core machine): exporters get their own, slower interval.
        scraping = self.source is TelemetrySource.prometheus
        self._sampler = Sampler(
            interval_s=self.cfg.prometheus_interval_s if scraping else self.cfg.interval_s,
            server_pid=self.pid,
            gpu_probe=self.probe if self.cfg.gpu and local else None,
            gpu=self.cfg.gpu and local,
            host=self._host,
        ).start()
        if self.study is not None:
            self.study[0].sampler = self._sampler

    def mark_phase(self, phase: Phase) -> None:
        if self.study is not None:
            self.study[0].mark(self.study[1], phase)
        elif self._sampler is not None:
            self._sampler.mark_phase(phase)

    @property
    def _sampling(self) -> Sampler | None:
        """The sampler this run's samples come from: its own, or the study's."""
        return self.study[0].sampler if self.study is not None else self._sampler

    def stop(self) -> None:
        """End sampling; the samples stay readable."""
        if self._sampler is not None and not self._stopped:
            self._stopped = True
            self._sampler.stop()
            self._notes.extend(self._sampler.notes)

    def close(self) -> None:
        """Release NVML and the exporter connections, whether or not the run got to sample (a
        lint=strict stop or a failed preflight ends it before start())."""
        self.stop()
        if self._http is not None:
            self._http.close()
            self._http = None
        self.probe.close()

    @property
    def samples(self) -> Sequence[Sample]:
        """Every telemetry sample of the run (none when telemetry is off); in a study, the time of
        the other arms' blocks is phase `other arm`."""
        if self.study is not None:
            return self.study[0].samples_of(self.study[1])
        return () if self._sampler is None else self._sampler.samples

    def metrics(self, output_tokens: int, server_threads: int | None = None) -> dict[str, float]:
        """The telemetry's summary; `server_threads`: a local llama.cpp server's compute threads,
        for the contention warnings (None: not one)."""
        sampler = self._sampling
        if sampler is None:
            return {}
        samples = self.samples
        out = summarize_telemetry(samples, phase=Phase.MEASURED, output_tokens=output_tokens or None)
        out["telemetry_samples"] = float(sum(1 for s in samples if s.phase == Phase.MEASURED))
        out["telemetry_overhead_core_pct"] = 100.0 * sampler.overhead_core_fraction
        found = self._contention(out, server_threads, "while measuring")
        self.warnings.extend(found)
        self._contended = bool(found)
        return out

    def early_warnings(self, server_threads: int | None = None) -> list[str]:
        """Contention already seen before the measured phase (start-up and warmup), said before a
        long run is spent measuring a busy machine; the measured phase gets its own check at the end."""
        if self._sampling is None:
            return []
        before = [s for s in self.samples if s.phase not in (Phase.MEASURED, Phase.DONE, OTHER_ARM)]
        if len(before) < EARLY_MIN_SAMPLES:
            return []
        metrics = summarize_telemetry(before, phase=None)
        # Warmup runs unpaced and holds the model load: the load generator's own CPU there says
        # nothing of the measured phase's, and only the bystanders are judged.
        metrics.pop("client_cpu_pct_mean", None)
        return self._contention(metrics, server_threads, "before measuring")

    def _contention(self, metrics: dict[str, float], server_threads: int | None, when: str) -> list[str]:
        # A server elsewhere does not share this machine's cores, whatever its threads.
        threads = None if self.remote else server_threads
        return contention_warnings(metrics, psutil.cpu_count() or 1, threads, when)

    def series(self) -> Iterable[Sequence[Any]]:
        if self._sampling is None or not self.cfg.log_series:
            return []
        return series_points(self.samples)

    def late_tags(self) -> dict[str, str]:
        """Tags only known once sampling is over."""
        if self._sampling is None:
            return {}
        energy = gpu_energy(self.samples, phase=Phase.MEASURED)
        return {tag.GPU_ENERGY_METHOD: energy.method, tag.CONTENDED: str(self._contended).lower()}

    def notes(self) -> list[str]:
        return list(dict.fromkeys(self._notes))
