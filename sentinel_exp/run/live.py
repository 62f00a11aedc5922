"""A live run: its server up, its run.json started, its records written as they finish. One
object carries the run's state through its steps (open, warmup, measure, conclude, end), so a
single run and each arm of an interleaved study go through the same code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sentinel_exp.analysis.stats import error_breakdown, is_cold
from sentinel_exp.clients import ModelFacts, RequestSpec, run_apis, send_request, unsent_warning
from sentinel_exp.clients.http1 import LoopbackClient
from sentinel_exp.clients.transport import measuring_client
from sentinel_exp.config.distributions import parse_distribution
from sentinel_exp.config.schema import ExperimentConfig
from sentinel_exp.errors import FolderUnwritable
from sentinel_exp.names import Phase, RunStatus
from sentinel_exp.records import RecordWriter, RequestRecord
from sentinel_exp.report import console as ui
from sentinel_exp.run.conclusion import Conclusion, conclude, llama_threads, run_tags
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.give_up import GiveUp, measured_nothing, warmup_timed_out
from sentinel_exp.run.load import OnRecord, PhasePlan, SendOne, run_phase
from sentinel_exp.run.monitor import RunMonitor
from sentinel_exp.run.option_lint import OptionLint
from sentinel_exp.run.servers import ServerHandle
from sentinel_exp.store.run_folder import RunFolder, RunJournal, RunSummary, new_run_file
from sentinel_exp.store.tracking import flatten, param_value
from sentinel_exp.urls import is_loopback_url
from sentinel_exp.workload.source import Planned, PromptSource

log = logging.getLogger(__name__)


@dataclass
class Ended:
    """A run whose folder is complete (run.json ended): what logging and ending it need."""

    status: RunStatus
    metrics: dict[str, float]
    failure: str | None
    signal: signal.Signals | None  # SIGINT/SIGTERM that stopped it
    measured_any: bool
    sent_any: bool = True  # False: stopped before its first request, so its folder is not kept


@dataclass(frozen=True)
class RunSetup:
    """What a run is before it opens: its config, where it writes, its resolved config and server."""

    cfg: ExperimentConfig
    ctx: RunContext
    resolved: dict[str, Any]
    handle: ServerHandle


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
        spec = self.wire.build_request(self.model, planned, self.options, self.keep_alive)
        return spec, planned


@dataclass(frozen=True)
class Clients:
    client: httpx.AsyncClient  # preflight, placement, unload: the server's other endpoints
    requests: httpx.AsyncClient | LoopbackClient  # the streamed warmup and measured requests


def _auth_headers(cfg: ExperimentConfig) -> dict[str, str] | None:
    # The key lives only in the environment and in this header: never in config, params or logs.
    api_key = os.environ.get(cfg.server.api_key_env, "").strip()
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _request_client(
    handle: ServerHandle, cfg: ExperimentConfig, client: httpx.AsyncClient
) -> AbstractAsyncContextManager[httpx.AsyncClient | LoopbackClient]:
    """What the warmup and measured requests go through: the lean client to a loopback server over
    plain http, where the client's own microseconds would be inside every measured interval;
    `client` (httpx) to anything else."""
    if is_loopback_url(handle.url) and handle.url.startswith("http://"):
        return LoopbackClient(handle.url, cfg.workload.concurrency, cfg.workload.timeout_s, _auth_headers(cfg))
    return nullcontext(client)


@asynccontextmanager
async def open_clients(handle: ServerHandle, cfg: ExperimentConfig) -> AsyncIterator[Clients]:
    headers = _auth_headers(cfg)
    w = cfg.workload
    async with measuring_client(handle.url, w.concurrency, w.timeout_s, headers) as client:  # noqa: SIM117 - the second needs the first
        async with _request_client(handle, cfg, client) as requests:
            yield Clients(client, requests)


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

    @property
    def measured_any(self) -> bool:
        return any(r.measured for r in self.records)


@dataclass
class LiveRun:
    """A run with its server up and its run.json started: its steps, in the order they run."""

    setup: RunSetup
    clients: Clients
    facts: ModelFacts
    monitor: RunMonitor
    journal: RunJournal
    factory: RequestFactory
    option_lint: OptionLint
    run_name: str
    writer: RecordWriter
    measurement: Measurement
    stop: asyncio.Event  # set to stop sending: a signal, a give-up, a full disk, the study's end
    progress: ui.RunProgress = field(default_factory=lambda: ui.RunProgress(False))

    @property
    def cfg(self) -> ExperimentConfig:
        return self.setup.cfg

    @property
    def output_dir(self) -> Path:
        return self.setup.ctx.output_dir

    @classmethod
    async def open(cls, setup: RunSetup, clients: Clients, monitor: RunMonitor, stop: asyncio.Event) -> LiveRun:
        """Preflight, the hardware check, the option lint (lint=strict stops here, before any
        request), and run.json started with the run's tags and params."""
        cfg, handle = setup.cfg, setup.handle
        facts = await run_apis(handle.kind, cfg.workload.api).server.preflight(clients.client, handle, cfg.model.name)
        monitor.check_hardware()
        monitor.choose_host_source()
        factory = RequestFactory(cfg, handle)
        option_lint = OptionLint(cfg, handle, factory.options, factory.unsent, factory.prompts)
        run_name = setup.ctx.run_name(cfg, handle.kind)
        tags = {**run_tags(setup, factory, facts, monitor), **option_lint.tags()}
        params = {k: param_value(v) for k, v in {**flatten(setup.resolved), "sent_options": factory.options}.items()}
        tracking = cfg.tracking
        run_file = new_run_file(
            run_name,
            tracking.experiment,
            tracking.uri if tracking.enabled else None,
            tags,
            params,
            parent_uid=setup.ctx.sweep_id,
        )
        journal = RunJournal(setup.ctx.output_dir, run_file)
        log.info("run %s: %s against %s %s", setup.ctx.output_dir, cfg.model.name, handle.kind, handle.url)
        for warning in factory.warnings + option_lint.warnings:
            log.warning("warning: %s", warning)
        w = cfg.workload
        measurement = Measurement(give_up=GiveUp(handle.url, w.max_error_rate, w.error_rate_min_requests))
        writer = RecordWriter(RunFolder(setup.ctx.output_dir).records)
        return cls(setup, clients, facts, monitor, journal, factory, option_lint, run_name, writer, measurement, stop)

    async def warmup(self, count: int | None = None, block: int | None = None) -> None:
        """Warmup requests, unpaced: they load the model and calibrate synthetic prompts, and are
        written and flagged, never counted. After the run's own warmup (block None) the num_ctx
        lint rule runs again with the server's prompt counts, and contention is said."""
        count = self.cfg.workload.warmup if count is None else count
        if count <= 0 or self.stop.is_set():
            return
        w = self.cfg.workload
        self.monitor.mark_phase(Phase.WARMUP)
        self.progress.phase(Phase.WARMUP, count)
        plan = PhasePlan(requests=count, concurrency=w.concurrency, seed=w.seed)
        await run_phase(plan, self._sender(Phase.WARMUP, 0, block), self._on_record, self.stop)
        if block is None and not self.stop.is_set():
            if timed_out := warmup_timed_out(self.measurement.records, w.timeout_s):
                log.error("error: %s; stopping before the measured phase", timed_out)
                self.measurement.stopped_early = timed_out
                self.stop.set()
                return
            self._after_warmup()

    def _after_warmup(self) -> None:
        self.journal.set_tags(self.option_lint.recheck_after_warmup(self.measurement.records))
        threads = llama_threads(self.setup.handle.kind, self.factory.options)
        for warning in self.monitor.early_warnings(threads):
            log.warning("warning: %s", warning)

    async def measure(self, count: int, first: int = 0, block: int | None = None) -> None:
        """`count` measured requests from measured request `first` on: a single run's whole phase,
        or one block of an interleaved study (its records carry the round, `block`)."""
        if count <= 0 or self.stop.is_set():
            return
        w = self.cfg.workload
        self.monitor.mark_phase(Phase.MEASURED)
        if block is None:
            self.progress.phase(Phase.MEASURED, count)
        plan = PhasePlan(
            requests=count,
            concurrency=w.concurrency,
            rate=w.rate,
            seed=w.seed + (block or 0),
            think_time=parse_distribution(w.think_time_s),
            idle_every=w.idle_every,
            idle_s=w.idle_s,
        )
        self.measurement.measured_s += await run_phase(
            plan, self._sender(Phase.MEASURED, first, block), self._on_record, self.stop
        )

    async def settle(self) -> None:
        """After the last measured request: the placement read in flight is waited for."""
        self.monitor.mark_phase(Phase.DONE)
        if self.measurement.placement_read is not None:
            await asyncio.gather(self.measurement.placement_read, return_exceptions=True)

    def _sender(self, phase: Phase, first: int, block: int | None) -> SendOne:
        w, factory, out = self.cfg.workload, self.factory, self.measurement
        # The measured phase goes on through the prompts where warmup stopped: its first request
        # must not reuse the prompt the server has just cached (a prefill-free, flattering TTFT).
        first_prompt = w.warmup + first if phase == Phase.MEASURED else 0

        async def send_one(index: int, arrival_ns: int, keep: OnRecord) -> None:
            if phase == Phase.MEASURED and w.cold_start:
                await self._unload()
                arrival_ns = time.perf_counter_ns()  # the unload is not part of the request
            spec, planned = factory.spec(first_prompt + index, phase)
            number = first + index if phase == Phase.MEASURED else index
            record = RequestRecord(
                index=number, phase=phase, prompt_index=spec.prompt_index, api=factory.api, block=block
            )
            record.input_tokens_target, record.num_predict = planned.input_tokens_target, factory.num_predict
            try:
                await send_request(self.clients.requests, spec, record, factory.wire.reader, arrival_ns)
            finally:
                record.cold = is_cold(record, w.cold_load_ms)
                factory.prompts.observe(record, planned)
                keep(record)
            if phase == Phase.MEASURED and out.placement_read is None and record.ok:
                out.placement_read = asyncio.create_task(self._read_placement())

        return send_one

    async def _read_placement(self) -> None:
        self.measurement.placement = await self.factory.server_wire.placement(self.clients.client, self.factory.model)

    async def _unload(self) -> None:
        if self.measurement.placement_read is not None:
            await self.measurement.placement_read  # it must see the model that served the first request
        await self.factory.server_wire.unload(self.clients.client, self.factory.model, self.cfg.workload.timeout_s)

    def _on_record(self, record: RequestRecord) -> None:
        out = self.measurement
        try:
            self.writer.write(record)
        except OSError as exc:
            if out.write_error is None:
                log.error("error: cannot write %s: %s; stopping", self.writer.path, exc.strerror or exc)
                self.stop.set()
            out.unwritable(exc)
        out.records.append(record)
        self.progress.advance(record)
        if out.give_up is not None and (reason := out.give_up.observe(record)):
            log.error("error: %s; stopping, logging what finished", reason)
            self.stop.set()

    def ending(self, signals: StopSignals | None, crashed: bool = False) -> tuple[RunStatus, str | None]:
        """How a run ends, and why it failed if it did (`crashed`: the phases raised)."""
        out = self.measurement
        if crashed:
            return RunStatus.FAILED, None
        if signals is not None and signals.received:
            return RunStatus.KILLED, None
        if out.write_error is not None:
            return RunStatus.FAILED, f"the run folder refused a write: {out.write_error.strerror}"
        failure = out.give_up.reason if out.give_up else None
        failure = failure or out.stopped_early or measured_nothing(out.records)
        return (RunStatus.FAILED, failure) if failure else (RunStatus.FINISHED, None)

    async def finish(self, signals: StopSignals | None, *, crashed: bool = False, brief: bool = False) -> Ended:
        """Whatever stopped the phases: the records closed, telemetry stopped, what was measured
        summarised, written and ended in run.json, then said on the console (`brief`: one line,
        for an arm of a study)."""
        out = self.measurement
        status, failure = self.ending(signals, crashed)
        try:
            try:
                self.writer.close()
            except OSError as exc:
                out.unwritable(exc)
            self.monitor.stop()
            conclusion = await conclude(self, status, failure)
            if out.write_error is not None and status == RunStatus.FINISHED:
                status, failure = self.ending(signals)  # the summary could not be written
        finally:
            try:
                self.journal.end(status, failure)
            except OSError as exc:
                out.unwritable(exc)
        self._say(conclusion, status, brief)
        if out.write_error is not None:
            why = out.write_error.strerror or out.write_error
            raise FolderUnwritable(
                f"cannot write the run folder {self.output_dir}: {why}; the run stopped after "
                f"{sum(r.measured for r in out.records)} measured request(s) and is FAILED; the summary "
                f"above has their numbers, {self.writer.path} those it could write"
            )
        received = signals.received if signals is not None else None
        return Ended(status, conclusion.metrics, failure, received, out.measured_any, bool(out.records))

    def _say(self, conclusion: Conclusion, status: RunStatus, brief: bool) -> None:
        if brief:
            ui.print_arm_line(self.run_name, status, conclusion.metrics, error_breakdown(self.measurement.records))
            return
        shown = RunSummary(
            status,
            run_name=self.run_name,
            metrics=conclusion.metrics,
            errors=error_breakdown(self.measurement.records),
            warnings=conclusion.warnings,
            verdict=conclusion.verdict.lines(),
        )
        ui.print_summary(shown, self.output_dir, conclusion.slo)


async def measure_single(setup: RunSetup) -> Ended:
    """A single run's phases against its server: warmup, then every measured request at once."""
    stop = asyncio.Event()
    signals = StopSignals(asyncio.get_running_loop(), stop)
    cfg = setup.cfg
    async with open_clients(setup.handle, cfg) as clients:
        monitor = RunMonitor(cfg.telemetry, cfg.hardware, setup.handle)
        try:
            live = await LiveRun.open(setup, clients, monitor, stop)
            crashed = True
            try:
                signals.install()
                monitor.start()
                with ui.RunProgress(ui.want_progress(cfg.progress)) as progress:
                    live.progress = progress
                    await live.warmup()
                    await live.measure(cfg.workload.requests)
                    await live.settle()
                crashed = False
            finally:
                signals.uninstall()
                # Whatever happened, what was measured is summarised, written and logged.
                ended = await live.finish(signals, crashed=crashed)
            return ended
        finally:
            monitor.close()
