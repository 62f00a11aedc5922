"""Concluding a run: what it measured summarised, judged against the SLOs, diagnosed, written to
summary.json and the report, and tagged; plus the tags a run starts with."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from sentinel_exp import __version__
from sentinel_exp import tags as tag
from sentinel_exp.analysis.diagnosis import (
    Diagnosis,
    classify_cold_starts,
    cold_start_warnings,
    diagnose,
    keep_alive_in_force,
    parse_unloads,
)
from sentinel_exp.analysis.slo import SloResult, judge
from sentinel_exp.analysis.stats import error_breakdown, open_loop_warnings, summarize
from sentinel_exp.checks.hardware import placement_kind, placement_warning
from sentinel_exp.clients import ModelFacts
from sentinel_exp.config.schema import ExperimentConfig
from sentinel_exp.names import RunStatus, ServerKind
from sentinel_exp.records import RequestRecord
from sentinel_exp.run.hosts import host_tags
from sentinel_exp.run.monitor import RunMonitor
from sentinel_exp.serve.threads import default_threads
from sentinel_exp.store.run_folder import RunSummary, SummaryServer, write_series
from sentinel_exp.store.tracking import config_hash
from sentinel_exp.workload.prompts_file import prompts_file_digest

if TYPE_CHECKING:
    from sentinel_exp.run.live import LiveRun, RequestFactory, RunSetup

log = logging.getLogger(__name__)


@dataclass
class Conclusion:
    metrics: dict[str, float]
    warnings: list[str]  # what may make these numbers mean less than they seem
    slo: SloResult
    verdict: Diagnosis


def input_digests(cfg: ExperimentConfig) -> dict[str, str]:
    prompts_file = cfg.workload.prompts_file
    return {"workload.prompts_file": prompts_file_digest(prompts_file)} if prompts_file else {}


def run_tags(setup: RunSetup, factory: RequestFactory, facts: ModelFacts, monitor: RunMonitor) -> dict[str, str]:
    """What a run is known by in MLflow: the tool, the server, the config and the environment."""
    cfg, ctx, handle = setup.cfg, setup.ctx, setup.handle
    inputs = input_digests(cfg)
    return {
        tag.VERSION: __version__,
        tag.SERVER_KIND: handle.kind,
        tag.SERVER_URL: handle.url,
        tag.CONFIG_HASH: config_hash(setup.resolved, inputs),
        **{tag.input_sha256(k): v for k, v in inputs.items()},
        tag.REPEAT: str(setup.resolved["repeat"]),
        tag.OUTPUT_DIR: str(ctx.output_dir),
        tag.API: factory.api,
        **{tag.choice(k): v for k, v in ctx.choices.items()},
        **({tag.OPTIONS_NOT_SENT: "true"} if factory.unsent else {}),
        **facts.tags(),
        **monitor.tags(),
        **host_tags(handle.url),
        **({tag.SWEEP_ID: ctx.sweep_id} if ctx.sweep_id else {}),
        **({tag.STUDY_ID: ctx.study_id} if ctx.study_id else {}),
    }


async def conclude(run: LiveRun, status: RunStatus, failure: str | None) -> Conclusion:
    """Summarise what was measured, judge and diagnose it, write summary.json and the report, and
    set the late tags in run.json."""
    cfg, handle, monitor, journal = run.cfg, run.setup.handle, run.monitor, run.journal
    measurement = run.measurement
    metrics = await _summarise(run)
    verdict = diagnose(measurement.records, metrics)
    metrics.update(verdict.metrics())
    slo = _judge_slo(cfg, metrics, measurement.records, measurement.measured_s)
    placement_tags, placement_note = _placement(cfg, metrics)
    warnings = [
        *run.factory.warnings,
        *run.option_lint.warnings,
        *open_loop_warnings(metrics, cfg.workload.rate, cfg.workload.concurrency),
        *monitor.warnings,
        *_cold_start_warnings(cfg, handle.log_path, measurement.records),
        *placement_note,
    ]
    summary = RunSummary(
        run_uid=journal.run.uid,
        run_name=run.run_name,
        status=status,
        metrics=metrics,
        errors=error_breakdown(measurement.records),
        server=SummaryServer(handle.kind, handle.url),
        model=run.facts.__dict__,
        telemetry_notes=monitor.notes(),
        warnings=warnings,
        verdict=verdict.lines(),
        failure=failure or None,
        slo=slo.as_dict() if slo.any else None,
    )
    out = run.output_dir
    try:
        summary.write(out)
        reports = _write_report(out, measurement.records, monitor, summary) if cfg.plots else []
        verdict_tag = {tag.VERDICT: verdict.text()} if verdict.text() else {}
        journal.set_tags({**slo.tags(), **placement_tags, **verdict_tag, **monitor.late_tags()})
        write_series(out, monitor.series())
        journal.add_artifacts([*reports, *([handle.log_path] if handle.log_path is not None else [])])
    except OSError as exc:  # a full disk: the numbers are still printed, and the run FAILED
        measurement.unwritable(exc)
    return Conclusion(metrics, warnings, slo, verdict)


async def _summarise(run: LiveRun) -> dict[str, float]:
    """The run's metrics. The server's model placement and the telemetry are extras: a failure
    there is noted and costs only those metrics, never the latency summary."""
    measurement = run.measurement
    metrics = summarize(measurement.records, measurement.measured_s)
    threads = llama_threads(run.setup.handle.kind, run.factory.options)
    try:
        # Read during the measured phase where it could be; afterwards the model may be gone.
        server_wire, model = run.factory.server_wire, run.cfg.model.name
        metrics.update(measurement.placement or await server_wire.placement(run.clients.client, model))
        metrics.update(run.monitor.metrics(int(metrics.get("output_tokens_total", 0)), threads))
    except Exception as exc:
        log.warning("warning: could not summarise placement/telemetry: %s: %s", type(exc).__name__, exc)
    return metrics


def llama_threads(kind: ServerKind, sent_options: Mapping[str, Any]) -> int | None:
    """The compute threads of a llama.cpp server (Ollama, the embedded one): num_thread when the
    run sends it, else Ollama's physical cores or the embedded server's default (serve/threads.py); None for
    servers whose threading is not known."""
    if kind not in (ServerKind.ollama, ServerKind.embedded):
        return None
    sent = sent_options.get("num_thread")
    if isinstance(sent, int) and not isinstance(sent, bool) and sent > 0:
        return sent
    if kind == ServerKind.ollama:
        return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    return default_threads()


def _cold_start_warnings(cfg: ExperimentConfig, log_path: Path | None, records: list[RequestRecord]) -> list[str]:
    """Cold measured requests after the model had been loaded, by likely cause. A bundled server's
    log says why it unloaded the model; for other servers the idle gaps and keep_alive tell."""
    lines: list[str] = []
    if log_path is not None:
        try:
            lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            log.warning("warning: could not read the server log %s: %s", log_path, exc)
    keep_alive_s = keep_alive_in_force(cfg.workload.keep_alive, cfg.server.keep_alive)
    return cold_start_warnings(classify_cold_starts(records, keep_alive_s, parse_unloads(lines), cfg.model.name))


def _placement(cfg: ExperimentConfig, metrics: dict[str, float]) -> tuple[dict[str, str], list[str]]:
    """The sentinel.placement tag and, where the hardware profile expects a GPU and the model
    was not all on it, the warning; nothing when the server did not say (an OpenAI server)."""
    fraction = metrics.get("gpu_offload_fraction")
    if fraction is None:
        return {}, []
    warning = placement_warning(cfg.hardware, fraction)
    if warning:
        log.warning("warning: %s", warning)
    return {tag.PLACEMENT: placement_kind(fraction)}, [warning] if warning else []


def _write_report(out: Path, records: list[RequestRecord], monitor: RunMonitor, summary: RunSummary) -> list[Path]:
    """report.md with the latency CDFs and the timeline; a failure here costs only the pictures."""
    from sentinel_exp.report.markdown import write_run_artifacts

    try:
        return write_run_artifacts(out, records, monitor.samples, summary)
    except Exception as exc:
        log.warning("warning: could not draw the run's plots: %s: %s", type(exc).__name__, exc)
        return []


def _judge_slo(
    cfg: ExperimentConfig, metrics: dict[str, float], records: list[RequestRecord], measured_s: float
) -> SloResult:
    """The SLO verdicts, added to `metrics` (goodput, slo_request_fraction, slo_<metric>_pass)."""
    slo = judge(cfg.slo.run_targets(), cfg.slo.request.limits(), metrics, records, measured_s)
    metrics.update(slo.metrics())
    return slo
