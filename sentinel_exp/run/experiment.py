"""One experiment, as a straight line (see docs/architecture.md, A run, in a straight line):

compose config -> resolve/start server -> preflight -> start the run folder's run.json -> telemetry
-> warmup -> measured phase (each record appended as it finishes) -> stop telemetry -> summarise
-> end run.json -> upload the folder to MLflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.markup import escape

from sentinel_exp import __version__, eventloop
from sentinel_exp.analysis.diagnosis import (
    Diagnosis,
    classify_cold_starts,
    cold_start_warnings,
    diagnose,
    keep_alive_in_force,
    parse_unloads,
)
from sentinel_exp.analysis.slo import SloResult, judge
from sentinel_exp.analysis.stats import error_breakdown, is_cold, open_loop_warnings, summarize
from sentinel_exp.checks.hardware import placement_kind, placement_warning
from sentinel_exp.clients import ModelFacts, RequestSpec, WireApi, run_apis, send_request, unsent_warning
from sentinel_exp.clients.http1 import LoopbackClient
from sentinel_exp.clients.transport import measuring_client
from sentinel_exp.config.distributions import parse_distribution
from sentinel_exp.config.schema import ExperimentConfig, to_yaml
from sentinel_exp.errors import FolderUnwritable, Interrupted, RunFailed, UserError
from sentinel_exp.names import Phase, RunStatus, ServerKind
from sentinel_exp.records import RecordWriter, RequestRecord
from sentinel_exp.report import console as ui
from sentinel_exp.run.give_up import GiveUp, measured_nothing, warmup_timed_out
from sentinel_exp.run.hosts import host_tags
from sentinel_exp.run.load import OnRecord, PhasePlan, run_phase
from sentinel_exp.run.monitor import RunMonitor
from sentinel_exp.run.option_lint import OptionLint
from sentinel_exp.run.servers import ServerHandle, resolve_server
from sentinel_exp.serve.threads import default_threads
from sentinel_exp.store.run_folder import Role, RunJournal, new_run_file, write_series
from sentinel_exp.store.tracking import FinishedRun, config_hash, flatten, param_value, store_check
from sentinel_exp.urls import is_loopback_url
from sentinel_exp.workload.prompts_file import prompts_file_digest
from sentinel_exp.workload.source import Planned, PromptSource

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Where a run writes, and the names it is known by."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    swept: frozenset[str] = frozenset()  # keys a sweep varies: they lead the run name
    sweep_id: str | None = None  # also the uid of the sweep's parent run: this run is one of its children
    # In a sweep, a configuration and repeat already FINISHED in the experiment is not measured
    # again (a rerun resumes where the sweep stopped); a single run always measures.
    resume: bool = False

    def run_name(self, cfg: ExperimentConfig, server_kind: str) -> str:
        """What differs first (the swept values, then other settings changed on the command line),
        the model when no override names it, then the server: `options=low_ctx qwen2.5:0.5b @ollama`."""
        if cfg.tracking.run_name:
            return cfg.tracking.run_name
        changed = {_override_key(o): _unescape(o.lstrip("+~")) for o in self.overrides}
        shown = {
            key: text
            for key, text in changed.items()
            # The server shows as @kind; where and how results are shown changes no measurement.
            if key not in ("server", "server.kind", "progress", "plots", "lint")
            and not key.startswith(("tracking.", "hydra."))
        }
        parts = [text for key, text in shown.items() if key in self.swept]
        parts += [text for key, text in shown.items() if key not in self.swept]
        if not any(key in ("model", "model.name") for key in changed):
            parts.append(cfg.model.name)
        return f"{' '.join(parts)} @{server_kind}"[:250]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _unescape(override: str) -> str:
    """Hydra escapes `:` and other grammar characters in the overrides it records (`http\\://`)."""
    return re.sub(r"\\(.)", r"\1", override)


@dataclass
class Outcome:
    run_id: str | None  # the MLflow run; None when tracking is off or the store did not take it
    status: str
    metrics: dict[str, float]
    reused: bool = False  # run_id is an earlier FINISHED run of this configuration: nothing was measured
    not_logged: str | None = None  # why the MLflow store did not take the run (its folder holds it)


@dataclass
class Ended:
    """A run whose folder is complete (run.json ended): what logging and ending it need."""

    status: RunStatus
    metrics: dict[str, float]
    failure: str | None
    signal: signal.Signals | None  # SIGINT/SIGTERM that stopped it
    measured_any: bool
    sent_any: bool = True  # False: stopped before its first request, so its folder is not kept


class RequestFactory:
    """Builds request `index` of a phase: prompts from workload.PromptSource (cycled, from a file,
    or synthetic), options and keep_alive as configured."""

    def __init__(self, cfg: ExperimentConfig, handle: ServerHandle) -> None:
        self.wire, self.server_wire = run_apis(handle.kind, cfg.workload.api)
        self.api = self.wire.name
        self.model = cfg.model.name
        self.prompts = PromptSource(cfg.workload)
        self.options = cfg.effective_options()
        self.keep_alive = cfg.workload.keep_alive
        # What the API cannot carry is named, and only what goes on the wire is logged as sent.
        self.unsent = self.wire.unsendable(self.options, self.keep_alive)
        self.warnings = [unsent_warning(self.wire, self.unsent, self.options, self.keep_alive)] if self.unsent else []
        self.options = {k: v for k, v in self.options.items() if k not in self.unsent}
        self.warnings += self.prompts.warnings
        self.num_predict: int | None = self.options.get("num_predict")

    def spec(self, index: int, phase: str = Phase.MEASURED) -> tuple[RequestSpec, Planned]:
        planned = self.prompts.next(index, warmup=phase == Phase.WARMUP)
        spec = self.wire.build_request(
            self.model,
            planned.text,
            planned.prompt_index,
            planned.system,
            self.options,
            self.keep_alive,
            planned.messages,
        )
        return spec, planned


def _auth_headers(cfg: ExperimentConfig) -> dict[str, str] | None:
    # The key lives only in the environment and in this header: never in config, params or logs.
    api_key = os.environ.get(cfg.server.api_key_env, "").strip()
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _http_client(handle: ServerHandle, cfg: ExperimentConfig) -> httpx.AsyncClient:
    return measuring_client(handle.url, cfg.workload.concurrency, cfg.workload.timeout_s, _auth_headers(cfg))


def _request_client(
    handle: ServerHandle, cfg: ExperimentConfig, client: httpx.AsyncClient
) -> AbstractAsyncContextManager[httpx.AsyncClient | LoopbackClient]:
    """What the warmup and measured requests go through: the lean client to a loopback server over
    plain http, where the client's own microseconds would be inside every measured interval;
    `client` (httpx) to anything else."""
    if is_loopback_url(handle.url) and handle.url.startswith("http://"):
        return LoopbackClient(handle.url, cfg.workload.concurrency, cfg.workload.timeout_s, _auth_headers(cfg))
    return nullcontext(client)


class StopSignals:
    """SIGINT/SIGTERM during the phases: stop sending, keep what finished, end as KILLED."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self.loop = loop
        self.stop = stop
        self.received: signal.Signals | None = None
        self._installed = False

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
            ui.stderr.print(
                f"\n[yellow]{sig.name}: stopping; logging what finished (send it again to abort at once)[/]"
            )
            self.stop.set()
        else:
            self.uninstall()
            signal.raise_signal(sig)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)
            self._installed = False


@dataclass
class Measurement:
    """What the phases produced so far; filled in place so an exception loses none of it."""

    records: list[RequestRecord] = field(default_factory=list)
    measured_s: float = 0.0
    # /api/ps read while the measured phase runs, when the model is certainly loaded.
    placement: dict[str, float] = field(default_factory=dict)
    placement_read: asyncio.Task[None] | None = None
    give_up: GiveUp | None = None  # watches each record; stops the phases once the run is not worth going on
    write_error: OSError | None = None  # the run folder refused a write (a full disk): the run stops
    stopped_early: str | None = None  # why the measured phase was not started (every warmup request timed out)

    def unwritable(self, exc: OSError) -> None:
        if self.write_error is None:
            self.write_error = exc


async def _measure(
    cfg: ExperimentConfig,
    factory: RequestFactory,
    clients: Clients,
    writer: RecordWriter,
    monitor: RunMonitor,
    progress: ui.RunProgress,
    stop: asyncio.Event,
    out: Measurement,
    after_warmup: Callable[[list[RequestRecord]], None] | None = None,
) -> None:
    w = cfg.workload

    async def read_placement() -> None:
        out.placement = await factory.server_wire.placement(clients.client, factory.model)

    async def unload() -> None:
        if out.placement_read is not None:
            await out.placement_read  # it must see the model that served the first request
        await factory.server_wire.unload(clients.client, factory.model, w.timeout_s)

    def sender(phase: str) -> Any:
        # The measured phase goes on through the prompts where warmup stopped: its first request
        # must not reuse the prompt the server has just cached (a prefill-free, flattering TTFT).
        first_prompt = w.warmup if phase == Phase.MEASURED else 0

        async def send_one(index: int, arrival_ns: int, keep: OnRecord) -> None:
            if phase == Phase.MEASURED and w.cold_start:
                await unload()
                arrival_ns = time.perf_counter_ns()  # the unload is not part of the request
            spec, planned = factory.spec(first_prompt + index, phase)
            record = RequestRecord(index=index, phase=phase, prompt_index=spec.prompt_index, api=factory.api)
            record.input_tokens_target, record.num_predict = planned.input_tokens_target, factory.num_predict
            try:
                await send_request(clients.requests, spec, record, factory.wire.reader, arrival_ns)
            finally:
                record.cold = is_cold(record, w.cold_load_ms)
                factory.prompts.observe(record, planned)
                keep(record)
            if phase == Phase.MEASURED and out.placement_read is None and record.ok:
                out.placement_read = asyncio.create_task(read_placement())

        return send_one

    def on_record(record: RequestRecord) -> None:
        try:
            writer.write(record)
        except OSError as exc:
            if out.write_error is None:
                log.error("error: cannot write %s: %s; stopping", writer.path, exc.strerror or exc)
                stop.set()
            out.unwritable(exc)
        out.records.append(record)
        progress.advance(record)
        if out.give_up is not None and (reason := out.give_up.observe(record)):
            log.error("error: %s; stopping, logging what finished", reason)
            stop.set()

    for phase, count in ((Phase.WARMUP, w.warmup), (Phase.MEASURED, w.requests)):
        if count <= 0 or stop.is_set():
            continue
        monitor.mark_phase(phase)
        progress.phase(phase, count)
        plan = PhasePlan(
            requests=count, concurrency=w.concurrency, rate=w.rate if phase == Phase.MEASURED else None, seed=w.seed
        )
        if phase == Phase.MEASURED:  # warmup runs unpaced: it only loads the model and calibrates
            think = parse_distribution(w.think_time_s)
            plan = replace(plan, think_time=think, idle_every=w.idle_every, idle_s=w.idle_s)
        duration_s = await run_phase(plan, sender(phase), on_record, stop)
        if phase == Phase.MEASURED:
            out.measured_s = duration_s
        elif not stop.is_set() and (timed_out := warmup_timed_out(out.records, w.timeout_s)):
            log.error("error: %s; stopping before the measured phase", timed_out)
            out.stopped_early = timed_out
            stop.set()
        elif after_warmup is not None and not stop.is_set():
            after_warmup(out.records)
    monitor.mark_phase(Phase.DONE)
    if out.placement_read is not None:
        await asyncio.gather(out.placement_read, return_exceptions=True)


def _prepare(cfg: ExperimentConfig, ctx: RunContext) -> dict[str, Any] | Outcome:
    """The run's folder with its config.yaml and the MLflow store checked; an Outcome instead when
    a sweep finds this configuration already measured."""
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    if (ctx.output_dir / "requests.jsonl").exists():
        raise UserError(
            f"{ctx.output_dir} already holds the records of another run; give this run its "
            f"own folder (hydra.run.dir=...)"
        )
    resolved = cfg.as_dict()
    (ctx.output_dir / "config.yaml").write_text(to_yaml(resolved), encoding="utf-8")

    if not cfg.tracking.enabled:
        return resolved
    # A store that cannot be written fails before any server starts; one that does not answer
    # only warns: the run folder keeps everything until the store is back (sentinel_exp.sync).
    store_check(cfg.tracking.uri)
    if ctx.resume and not cfg.force:
        done = _finished_before(cfg, resolved)
        if done is not None:
            return _already_done(ctx, done)
    return resolved


def _input_digests(cfg: ExperimentConfig) -> dict[str, str]:
    prompts_file = cfg.workload.prompts_file
    return {"workload.prompts_file": prompts_file_digest(prompts_file)} if prompts_file else {}


def _finished_before(cfg: ExperimentConfig, resolved: dict[str, Any]) -> FinishedRun | None:
    from sentinel_exp.store.upload import shared_tracker

    try:
        tracker = shared_tracker(cfg.tracking.uri, cfg.tracking.experiment)
        return tracker.finished_run(config_hash(resolved, _input_digests(cfg)), cfg.repeat)
    except UserError as exc:
        log.warning("warning: cannot tell whether this configuration was measured before: %s", exc)
        return None


async def _with_server(cfg: ExperimentConfig, ctx: RunContext, resolved: dict[str, Any], handle: ServerHandle) -> Ended:
    async with _http_client(handle, cfg) as client, _request_client(handle, cfg, client) as requests:
        facts = await run_apis(handle.kind, cfg.workload.api).server.preflight(client, handle, cfg.model.name)
        monitor = RunMonitor(cfg.telemetry, cfg.hardware, handle)
        try:
            monitor.check_hardware()
            monitor.choose_host_source()
            return await _tracked_run(cfg, ctx, resolved, handle, Clients(client, requests), facts, monitor)
        finally:
            monitor.close()


def _already_done(ctx: RunContext, done: FinishedRun) -> Outcome:
    """This configuration and repeat FINISHED before: the job stands for that run. Its summary
    goes into this job's folder, so the sweep's table and comparison see its numbers."""
    summary = {**done.summary, "run_id": done.run_id, "status": RunStatus.FINISHED, "metrics": done.metrics}
    summary["already_done"] = True
    (ctx.output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    ui.stdout.print(f"already done ({done.run_id}): not measured again; force=true measures it anew", soft_wrap=True)
    return Outcome(done.run_id, RunStatus.FINISHED, done.metrics, reused=True)


@dataclass(frozen=True)
class Clients:
    client: httpx.AsyncClient  # preflight, placement, unload: the server's other endpoints
    requests: httpx.AsyncClient | LoopbackClient  # the streamed warmup and measured requests


@dataclass
class LiveRun:
    """A run with its server up and its run.json started: what concluding it needs."""

    cfg: ExperimentConfig
    ctx: RunContext
    handle: ServerHandle
    clients: Clients
    facts: ModelFacts
    monitor: RunMonitor
    journal: RunJournal
    factory: RequestFactory
    option_lint: OptionLint
    run_name: str


@dataclass
class Conclusion:
    metrics: dict[str, float]
    warnings: list[str]  # what may make these numbers mean less than they seem
    slo: SloResult
    verdict: Diagnosis


async def _tracked_run(
    cfg: ExperimentConfig,
    ctx: RunContext,
    resolved: dict[str, Any],
    handle: ServerHandle,
    clients: Clients,
    facts: ModelFacts,
    monitor: RunMonitor,
) -> Ended:
    factory = RequestFactory(cfg, handle)
    # Before any request: lint=strict stops here.
    option_lint = OptionLint(cfg, handle, factory.options, factory.unsent, factory.prompts)
    run_name = ctx.run_name(cfg, handle.kind)
    tags = {**_run_tags(cfg, ctx, resolved, handle, factory, facts, monitor), **option_lint.tags()}
    params = {k: param_value(v) for k, v in {**flatten(resolved), "sent_options": factory.options}.items()}
    tracking = cfg.tracking
    journal = RunJournal(
        ctx.output_dir,
        new_run_file(
            Role.RUN,
            run_name,
            tracking.experiment,
            tracking.uri if tracking.enabled else None,
            tags,
            params,
            parent_uid=ctx.sweep_id,
        ),
    )
    run = LiveRun(cfg, ctx, handle, clients, facts, monitor, journal, factory, option_lint, run_name)
    status, failure = RunStatus.FAILED, None
    measurement = Measurement(
        give_up=GiveUp(handle.url, cfg.workload.max_error_rate, cfg.workload.error_rate_min_requests)
    )

    def after_warmup(records: list[RequestRecord]) -> None:
        journal.set_tags(option_lint.recheck_after_warmup(records))
        for warning in monitor.early_warnings(llama_threads(handle.kind, factory.options)):
            log.warning("warning: %s", warning)

    signals = StopSignals(asyncio.get_running_loop(), asyncio.Event())
    try:
        log.info("run %s: %s against %s %s", ctx.output_dir, cfg.model.name, handle.kind, handle.url)
        for warning in factory.warnings + option_lint.warnings:
            log.warning("warning: %s", warning)
        writer = RecordWriter(ctx.output_dir / "requests.jsonl")
        try:
            signals.install()
            monitor.start()
            with ui.RunProgress(ui.want_progress(cfg.progress)) as progress:
                await _measure(
                    cfg, factory, clients, writer, monitor, progress, signals.stop, measurement, after_warmup
                )
            status, failure = _ending(signals, measurement)
        finally:
            signals.uninstall()
            try:
                writer.close()
            except OSError as exc:
                measurement.unwritable(exc)
            monitor.stop()
            # Whatever happened, what was measured is summarised, written and logged.
            conclusion = await _conclude(run, measurement, status, failure)
            if measurement.write_error is not None and status == RunStatus.FINISHED:
                status, failure = _ending(signals, measurement)  # the summary could not be written
    finally:
        try:
            journal.end(status, failure)
        except OSError as exc:
            measurement.unwritable(exc)
    ui.print_summary(
        conclusion.metrics,
        run_name,
        None,
        str(ctx.output_dir),
        error_breakdown(measurement.records),
        status,
        conclusion.warnings,
        conclusion.slo,
        conclusion.verdict.lines(),
    )
    if measurement.write_error is not None:
        why = measurement.write_error.strerror or measurement.write_error
        raise FolderUnwritable(
            f"cannot write the run folder {ctx.output_dir}: {why}; the run stopped after "
            f"{sum(r.measured for r in measurement.records)} measured request(s) and is FAILED; the summary "
            f"above has their numbers, {writer.path} those it could write"
        )
    records = measurement.records
    return Ended(status, conclusion.metrics, failure, signals.received, any(r.measured for r in records), bool(records))


def _log_and_end(cfg: ExperimentConfig, ctx: RunContext, ended: Ended) -> Outcome:
    """Upload the ended run's folder to MLflow (its server is stopping meanwhile), then end as the
    run did: exit status for a signal, RunFailed for a failure."""
    run_id, not_logged = None, None
    # Stopped before the measured phase, a run that measured nothing does not wait seconds for
    # MLflow's import to log it; where MLflow is loaded already (a sweep's jobs) it costs nothing.
    quick_exit = ended.signal is not None and not ended.measured_any
    if cfg.tracking.enabled and not (quick_exit and "mlflow" not in sys.modules):
        run_id, not_logged = _upload(cfg, ctx)
    elif cfg.tracking.enabled and (ended.sent_any or ctx.sweep_id is not None):
        ui.stdout.print(escape(f"not logged to MLflow; upload it with: python -m sentinel_exp.sync {ctx.output_dir}"))
    if ended.signal is not None:
        raise Interrupted(ended.signal.name, 128 + int(ended.signal))
    if ended.failure:
        raise RunFailed(f"{ended.failure}; the run is FAILED (records: {ctx.output_dir / 'requests.jsonl'})")
    return Outcome(run_id, ended.status, ended.metrics, not_logged=not_logged)


def _upload(cfg: ExperimentConfig, ctx: RunContext) -> tuple[str | None, str | None]:
    """The ended run folder uploaded to MLflow: (run id, None), or (None, why not) after a warning
    that says how to upload it later. Nothing measured is lost either way: the folder holds it."""
    from sentinel_exp.store.upload import upload_now

    try:
        uploaded, line = upload_now(ctx.output_dir)
    except Exception as exc:  # the store is down, full or refuses: the folder stands
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = (
            f"not logged to MLflow ({cfg.tracking.uri}): {reason}. The run folder holds everything; "
            f"upload it later with: python -m sentinel_exp.sync {ctx.output_dir}"
        )
        ui.stderr.print("[yellow]warning:[/] " + escape(message), soft_wrap=True)
        return None, message
    ui.stdout.print(escape(line), soft_wrap=True)
    return uploaded.run_id, None


def _ending(signals: StopSignals, measurement: Measurement) -> tuple[RunStatus, str | None]:
    """How a run that got through its phases ends, and why it failed if it did."""
    if signals.received:
        return RunStatus.KILLED, None
    if measurement.write_error is not None:
        return RunStatus.FAILED, f"the run folder refused a write: {measurement.write_error.strerror}"
    failure = measurement.give_up.reason if measurement.give_up else None
    failure = failure or measurement.stopped_early or measured_nothing(measurement.records)
    return (RunStatus.FAILED, failure) if failure else (RunStatus.FINISHED, None)


async def _conclude(run: LiveRun, measurement: Measurement, status: RunStatus, failure: str | None) -> Conclusion:
    """Summarise what was measured, judge and diagnose it, write summary.json and the report, and
    log it all to the open MLflow run."""
    cfg, handle, monitor, journal = run.cfg, run.handle, run.monitor, run.journal
    threads = llama_threads(handle.kind, run.factory.options)
    server_wire = run.factory.server_wire
    metrics = await _summarise(measurement, run.clients.client, server_wire, cfg.model.name, monitor, threads)
    verdict = diagnose(measurement.records, metrics)
    metrics.update(verdict.metrics())
    slo = _judge_slo(cfg, metrics, measurement)
    placement_tags, placement_note = _placement(cfg, metrics)
    warnings = [
        *run.factory.warnings,
        *run.option_lint.warnings,
        *open_loop_warnings(metrics, cfg.workload.rate, cfg.workload.concurrency),
        *monitor.warnings,
        *_cold_start_warnings(cfg, handle, measurement.records),
        *placement_note,
    ]
    summary = {
        "run_uid": journal.run.uid,
        "run_name": run.run_name,
        "status": status,
        "metrics": metrics,
        "errors": error_breakdown(measurement.records),
        "server": {"kind": handle.kind, "url": handle.url},
        "model": run.facts.__dict__,
        "telemetry_notes": monitor.notes(),
        "warnings": warnings,
        "verdict": verdict.lines(),
        **({"failure": failure} if failure else {}),
        **({"slo": slo.as_dict()} if slo.any else {}),
    }
    out = run.ctx.output_dir
    try:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        reports = _write_report(run.ctx, measurement, monitor, summary) if cfg.plots else []
        verdict_tag = {"sentinel.verdict": verdict.text()} if verdict.text() else {}
        journal.set_tags({**slo.tags(), **placement_tags, **verdict_tag, **monitor.late_tags()})
        write_series(out, monitor.series())
        journal.add_artifacts([*reports, *([handle.log_path] if handle.log_path is not None else [])])
    except OSError as exc:  # a full disk: the numbers are still printed, and the run FAILED
        measurement.unwritable(exc)
    return Conclusion(metrics, warnings, slo, verdict)


def _run_tags(
    cfg: ExperimentConfig,
    ctx: RunContext,
    resolved: dict[str, Any],
    handle: ServerHandle,
    factory: RequestFactory,
    facts: ModelFacts,
    monitor: RunMonitor,
) -> dict[str, str]:
    """What a run is known by in MLflow: the tool, the server, the config and the environment."""
    inputs = _input_digests(cfg)
    return {
        "sentinel.version": __version__,
        "sentinel.server_kind": handle.kind,
        "sentinel.server_url": handle.url,
        "sentinel.config_hash": config_hash(resolved, inputs),
        **{f"sentinel.input_sha256.{k}": v for k, v in inputs.items()},
        "sentinel.repeat": str(resolved["repeat"]),
        "sentinel.output_dir": str(ctx.output_dir),
        "sentinel.api": factory.api,
        **{f"sentinel.choice.{k}": v for k, v in ctx.choices.items()},
        **({"sentinel.options_not_sent": "true"} if factory.unsent else {}),
        **facts.tags(),
        **monitor.tags(),
        **host_tags(handle.url),
        **({"sentinel.sweep_id": ctx.sweep_id} if ctx.sweep_id else {}),
    }


async def _summarise(
    measurement: Measurement,
    client: httpx.AsyncClient,
    server_wire: WireApi,
    model: str,
    monitor: RunMonitor,
    server_threads: int | None,
) -> dict[str, float]:
    """The run's metrics. The server's model placement and the telemetry are extras: a failure
    there is noted and costs only those metrics, never the latency summary."""
    metrics = summarize(measurement.records, measurement.measured_s)
    try:
        # Read during the measured phase where it could be; afterwards the model may be gone.
        metrics.update(measurement.placement or await server_wire.placement(client, model))
        metrics.update(monitor.metrics(int(metrics.get("output_tokens_total", 0)), server_threads))
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


def _cold_start_warnings(cfg: ExperimentConfig, handle: ServerHandle, records: list[RequestRecord]) -> list[str]:
    """Cold measured requests after the model had been loaded, by likely cause. A bundled server's
    log says why it unloaded the model; for other servers the idle gaps and keep_alive tell."""
    lines: list[str] = []
    if handle.log_path is not None:
        try:
            lines = handle.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            log.warning("warning: could not read the server log %s: %s", handle.log_path, exc)
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
    return {"sentinel.placement": placement_kind(fraction)}, [warning] if warning else []


def _write_report(
    ctx: RunContext, measurement: Measurement, monitor: RunMonitor, summary: dict[str, Any]
) -> list[Path]:
    """report.md with the latency CDFs and the timeline; a failure here costs only the pictures."""
    from sentinel_exp.report.markdown import write_run_artifacts

    try:
        return write_run_artifacts(ctx.output_dir, measurement.records, monitor.samples, summary)
    except Exception as exc:
        log.warning("warning: could not draw the run's plots: %s: %s", type(exc).__name__, exc)
        return []


def _judge_slo(cfg: ExperimentConfig, metrics: dict[str, float], measurement: Measurement) -> SloResult:
    """The SLO verdicts, added to `metrics` (goodput, slo_request_fraction, slo_<metric>_pass)."""
    slo = judge(cfg.slo.run_targets(), cfg.slo.request.limits(), metrics, measurement.records, measurement.measured_s)
    metrics.update(slo.metrics())
    return slo


def run(cfg: ExperimentConfig, ctx: RunContext) -> Outcome:
    share = cfg.job_share()
    if share is not cfg:
        log.info(
            "sweep.order=interleaved: chunk %d of %d, %d of workload.requests=%d",
            cfg.repeat + 1,
            cfg.sweep.chunks,
            share.workload.requests,
            cfg.workload.requests,
        )
    resolved = _prepare(share, ctx)
    if isinstance(resolved, Outcome):
        return resolved
    # The server starts before the event loop does: a blocking wait inside the loop would hold
    # Ctrl-C back until the server is ready; out here it interrupts the wait at once.
    # In a sweep, the next job's server starts from a standby process made while this one uploads.
    with resolve_server(
        share.server, share.model.name, ctx.output_dir, more_to_come=ctx.sweep_id is not None
    ) as handle:
        ended = eventloop.run(_with_server(share, ctx, resolved, handle))
    # The server stops while the run is uploaded: it is not needed for that.
    return _log_and_end(share, ctx, ended)
