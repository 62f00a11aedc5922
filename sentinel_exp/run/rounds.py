"""An interleaved study: every arm of a sweep measured against one server, in rounds (see
docs/statistics.md, The design).

Each arm is a run of its own (its folder, run.json, records, summary and report, as a single run
has), but its measured requests are cut into blocks, one per round, and the rounds run the arms
in a balanced order (sweep/design.py). The records carry their round (`block`), so the comparison
pairs the arms round by round: what the machine did during a round, it did to every arm. The
bundled servers start once for the study, one per distinct server setting; a switch to an arm
whose model or runner options differ reloads the model, and the requests right after such a
switch are warmup. With compare.budget_s, rounds are added until the objective is decided.

The study runs in the process that launched the sweep; the Hydra job of each arm then only
uploads its folder (run/experiment.py, `adopt`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from sentinel_exp import eventloop
from sentinel_exp.analysis.comparison import ALPHA, Arm, Comparison, RunResult, compare
from sentinel_exp.config.schema import CompareConfig, ExperimentConfig, ServerConfig
from sentinel_exp.errors import Interrupted, UserError
from sentinel_exp.names import ServerKind
from sentinel_exp.report import console as ui
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.experiment import Outcome, prepare, upload
from sentinel_exp.run.live import Ended, LiveRun, RunSetup, StopSignals, open_clients
from sentinel_exp.run.monitor import RunMonitor, StudySampling
from sentinel_exp.run.servers import ServerHandle, resolve_server
from sentinel_exp.serve.wire import RUNNER_DEFAULTS
from sentinel_exp.store.run_folder import RunFolder
from sentinel_exp.sweep.design import Schedule, extended, plan
from sentinel_exp.sweep.sequential import LookPlan

log = logging.getLogger(__name__)

# An arm's error goes to the study's log only: the Hydra job that adopts the arm prints it, once.
FILE_ONLY = {"file_only": True}


@dataclass(frozen=True)
class StudyArm:
    """One arm: its config, its folder and names, and its job in the sweep."""

    cfg: ExperimentConfig
    ctx: RunContext
    num: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class StudyPlan:
    """What the study as a whole is asked: where it writes, what decides it, how it is cut."""

    sweep_dir: Path
    compare: CompareConfig
    objective: str
    progress: bool
    # Each candidate's level: below 0.05 where several candidates share the 5% (the doctor's).
    alpha: float = ALPHA
    # When a look may stop the study (sweep/sequential.py); None: its CI beyond or within the minimum effect.
    settles: Callable[[Comparison], bool] | None = None


@dataclass
class _Arm:
    arm: StudyArm
    setup: RunSetup
    live: LiveRun | None = None
    ended: Ended | None = None
    error: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> LiveRun:
        assert self.live is not None, "an arm that did not open takes no part in the rounds"
        return self.live


def run_study(arms: Sequence[StudyArm], study: StudyPlan) -> None:
    """Measure the arms in interleaved rounds. Each arm's folder ends with its run ended (or the
    earlier run it reused, or its error) and a study_arm.json its Hydra job adopts; the sweep
    folder gets study.json, the design as it ran."""
    measuring: list[tuple[StudyArm, dict[str, Any]]] = []
    for arm in arms:
        try:
            resolved = prepare(arm.cfg, arm.ctx)
        except UserError as exc:
            _leave(arm, {"error": str(exc)})
            continue
        if isinstance(resolved, Outcome):
            _leave(arm, {"reused_run_id": resolved.run_id})
        else:
            measuring.append((arm, resolved))
    if not measuring:
        return
    with ExitStack() as servers:
        handles, errors = _start_servers(servers, [arm for arm, _ in measuring])
        states = []
        for arm, resolved in measuring:
            key = _server_key(arm.cfg)
            if key in handles:
                states.append(_Arm(arm, RunSetup(arm.cfg, arm.ctx, resolved, handles[key])))
            else:
                _leave(arm, {"error": errors[key]})
        interrupted = eventloop.run(_measure(states, study)) if states else None
    for state in states:
        _leave_measured(state)
    if interrupted is not None:
        _upload_all(states)
        raise interrupted


def _server_key(cfg: ExperimentConfig) -> str:
    """Arms with the same server settings share one server; a bundled server serves one model. Arms
    that differ in keep_alive get a bundled server each: a request's keep_alive sets how long the
    model stays for every later request (omitted, it keeps the last one), so on one server each arm
    would keep the model warm for the other."""
    own_state = {"keep_alive": cfg.workload.keep_alive} if cfg.server.kind in BUNDLED else {}
    return json.dumps(
        {"server": cfg.as_dict()["server"], "model": cfg.model.name, **own_state}, sort_keys=True, default=str
    )


BUNDLED = (ServerKind.simulated, ServerKind.embedded)


def _start_servers(stack: ExitStack, arms: list[StudyArm]) -> tuple[dict[str, ServerHandle], dict[str, str]]:
    """One server per distinct server setting, started once for the whole study, its log in the
    folder of the first arm that uses it; a server that cannot start costs only its arms."""
    handles: dict[str, ServerHandle] = {}
    errors: dict[str, str] = {}
    epoch = time.time()
    for arm in arms:
        key = _server_key(arm.cfg)
        if key in handles or key in errors:
            continue
        try:
            server = _with_study_epoch(arm.cfg.server, epoch)
            handles[key] = stack.enter_context(resolve_server(server, arm.cfg.model.name, arm.ctx.output_dir))
        except UserError as exc:
            errors[key] = str(exc)
            log.error("a server could not start: %s", exc, extra=FILE_ONLY)
    return handles, errors


def _with_study_epoch(server: ServerConfig, epoch: float) -> ServerConfig:
    """A simulated server's drift and spells counted from the study's start, unless the config
    fixes their origin: every simulated server of the study then sees the same machine, and a
    seeded study the same noise whenever it runs."""
    if server.kind != ServerKind.simulated or server.sim.noise_epoch:
        return server
    return dataclasses.replace(server, sim=dataclasses.replace(server.sim, noise_epoch=epoch))


def _runner_identity(cfg: ExperimentConfig) -> str:
    """What the server loads a model with: a change between two blocks reloads it."""
    options = cfg.effective_options()
    runner = {k: options.get(k, default) for k, default in RUNNER_DEFAULTS.items()}
    return json.dumps({"server": _server_key(cfg), "runner": runner}, sort_keys=True, default=str)


async def _measure(arms: list[_Arm], study: StudyPlan) -> Interrupted | None:
    """Open every arm, warm each up, then the rounds; every arm concluded whatever happens. Returns
    the Interrupted a signal left, raised once the folders are complete."""
    everything = asyncio.Event()
    signals = StopSignals(asyncio.get_running_loop(), everything)
    single_server = len({id(a.setup.handle) for a in arms}) == 1
    sampling = StudySampling(server_pid=arms[0].setup.handle.pid if single_server else None)
    async with AsyncExitStack() as stack:
        opened = await _open_all(arms, stack, sampling)
        if not opened:
            return None
        relay = asyncio.create_task(_relay(everything, opened))
        crashed = True
        try:
            signals.install()
            with _study_progress(study, opened) as progress:
                for state in opened:
                    state.running.progress = progress
                    state.running.monitor.start()
                await _rounds(opened, study)
            crashed = False
        finally:
            signals.uninstall()
            relay.cancel()
            for state in opened:
                await state.running.settle()
                state.ended = await state.running.finish(signals, crashed=crashed, brief=True)
    if signals.received is not None:
        return Interrupted(signals.received.name, 128 + int(signals.received))
    return None


async def _relay(everything: asyncio.Event, arms: list[_Arm]) -> None:
    """A signal stops every arm at once, whichever block is running."""
    await everything.wait()
    for state in arms:
        state.stop.set()


async def _open_all(arms: list[_Arm], stack: AsyncExitStack, sampling: StudySampling) -> list[_Arm]:
    """Each arm's clients, monitor and run.json; an arm its preflight refuses (a model not pulled,
    lint=strict) is left with its error and the study goes on without it."""
    opened: list[_Arm] = []
    for state in arms:
        cfg, handle = state.setup.cfg, state.setup.handle
        try:
            clients = await stack.enter_async_context(open_clients(handle, cfg))
            monitor = RunMonitor(cfg.telemetry, cfg.hardware, handle, study=(sampling, len(opened)))
            stack.callback(monitor.close)
            state.live = await LiveRun.open(state.setup, clients, monitor, state.stop)
        except UserError as exc:
            state.error = str(exc)
            log.error("%s: %s", state.arm.ctx.run_name(cfg, handle.kind), exc, extra=FILE_ONLY)
            continue
        opened.append(state)
    return opened


def _study_progress(study: StudyPlan, arms: list[_Arm]) -> ui.StudyProgress:
    total = sum(a.setup.cfg.workload.warmup + a.setup.cfg.workload.requests for a in arms)
    return ui.StudyProgress(study.progress, total)


async def _rounds(arms: list[_Arm], study: StudyPlan) -> None:
    """The warmups, then the rounds, each arm's block in the round's order; with a budget, looks
    after the planned rounds until the objective is decided or the budget is spent."""
    cfg = study.compare
    requests = [a.setup.cfg.workload.requests for a in arms]
    # Concurrent streams fill a block only in a closed loop; paced arrivals come one at a time.
    streams = max(a.setup.cfg.workload.concurrency if a.setup.cfg.workload.rate is None else 1 for a in arms)
    schedule = plan(requests, streams, cfg.blocks, cfg.seed)
    _say_design(arms, schedule, cfg)
    _warn_of_shared_state(arms)
    loaded: dict[int, str] = {}  # each server's model, as the last request to it loaded it
    for state in arms:
        await state.running.warmup()
        loaded[id(state.setup.handle)] = _runner_identity(state.setup.cfg)
    started = time.monotonic()
    looks = _look_plan(study, schedule.rounds)
    done = 0
    while done < schedule.rounds and not all(a.stop.is_set() for a in arms):
        for index in schedule.orders[done]:
            await _block(arms[index], schedule.block_sizes[index], done, loaded, cfg.switch_warmup)
        done += 1
        if looks is not None and looks.due(done):
            look = looks.look(done, time.monotonic() - started, lambda alpha: _comparisons(arms, study, alpha))
            if look.stop:
                break
            schedule = extended(schedule, looks.next_rounds, cfg.seed)
    _write_design(study, arms, schedule, done, looks, time.monotonic() - started)


def _look_plan(study: StudyPlan, first: int) -> LookPlan | None:
    budget_s = study.compare.budget_s
    if budget_s is None:
        return None
    if study.settles is None:
        return LookPlan(budget_s, first, study.alpha)
    return LookPlan(budget_s, first, study.alpha, settles=study.settles)


async def _block(state: _Arm, sizes: tuple[int, ...], round_index: int, loaded: dict[int, str], warmup: int) -> None:
    """One arm's block of one round. Where its server holds the model with other runner options (the
    last request to it came from another arm), the switch reloads it: warmup first."""
    if state.stop.is_set():
        return
    server, identity = id(state.setup.handle), _runner_identity(state.setup.cfg)
    if loaded.get(server) != identity and warmup > 0:
        await state.running.warmup(warmup, block=round_index)
    loaded[server] = identity
    await state.running.measure(sizes[round_index], sum(sizes[:round_index]), block=round_index)


def _warn_of_shared_state(arms: list[_Arm]) -> None:
    """keep_alive arms on one server the study cannot split (Ollama, a URL): they interfere."""
    shared: dict[int, set[str]] = {}
    for state in arms:
        shared.setdefault(id(state.setup.handle), set()).add(str(state.setup.cfg.workload.keep_alive))
    if any(len(values) > 1 for values in shared.values()):
        log.warning(
            "warning: arms that differ in workload.keep_alive share one server: each request's keep_alive "
            "also keeps the model for the other arm, so their difference is understated; for a keep_alive "
            "comparison on this server use sweep.order=sequential with repeats (sweep=repeat3)"
        )


def _comparisons(arms: list[_Arm], study: StudyPlan, alpha: float) -> list[Comparison]:
    """Every candidate's objective against the baseline, on what the rounds measured so far."""
    from sentinel_exp.sweep.study import arm_names, configuration, pick_baseline

    names = arm_names([configuration(a.arm.overrides) for a in arms])
    measured = [
        Arm(name, [RunResult(tuple(a.running.measurement.records), study="this study")])
        for name, a in zip(names, arms, strict=True)
    ]
    base = pick_baseline(measured, study.compare.baseline)
    cfg = study.compare
    return [
        compare(measured[base], arm, objective=study.objective, min_effect_pct=cfg.min_effect_pct, alpha=alpha)
        for i, arm in enumerate(measured)
        if i != base
    ]


def _say_design(arms: list[_Arm], schedule: Schedule, cfg: CompareConfig) -> None:
    sizes = sorted({size for per_arm in schedule.block_sizes for size in per_arm})
    per_block = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    servers = len({id(a.setup.handle) for a in arms})
    budget = f", more until decided within compare.budget_s={cfg.budget_s:g}" if cfg.budget_s is not None else ""
    ui.stdout.print(
        escape(
            f"study: {len(arms)} arms, {schedule.rounds} rounds of {per_block} requests per arm{budget}, "
            f"balanced order (compare.seed={cfg.seed}), {servers} server{'s' if servers > 1 else ''} started once"
        ),
        soft_wrap=True,
    )


def _write_design(
    study: StudyPlan, arms: list[_Arm], schedule: Schedule, done: int, looks: LookPlan | None, seconds: float
) -> None:
    design: dict[str, Any] = {
        "rounds": done,
        "seconds": round(seconds, 3),  # the rounds' machine time, every arm's blocks
        "planned_rounds": schedule.rounds,
        "orders": [[arms[i].arm.num for i in order] for order in schedule.orders[:done]],
        "block_sizes": {
            str(a.arm.num): list(sizes[:done]) for a, sizes in zip(arms, schedule.block_sizes, strict=True)
        },
        "seed": study.compare.seed,
        "alpha": study.alpha,
    }
    if looks is not None:
        design.update(looks.as_dict())
    RunFolder(study.sweep_dir).study.write_text(json.dumps(design, indent=2), encoding="utf-8")


def _leave(arm: StudyArm, fields: dict[str, Any]) -> None:
    _leave_in(arm.ctx, arm.num, arm.overrides, fields)


def leave_error(ctx: RunContext, num: int, overrides: tuple[str, ...], message: str) -> None:
    """A job that cannot take part (its config is invalid): its Hydra job reports the error."""
    _leave_in(ctx, num, overrides, {"error": message})


def _leave_in(ctx: RunContext, num: int, overrides: tuple[str, ...], fields: dict[str, Any]) -> None:
    """The arm's marker for its Hydra job, and its outcome for the sweep's closing table (written
    here too, so a study stopped before its jobs run still has one)."""
    folder = ctx.output_dir
    folder.mkdir(parents=True, exist_ok=True)
    RunFolder(folder).study_arm.write_text(json.dumps(fields, indent=2, default=str), encoding="utf-8")
    outcome: dict[str, Any] = {"sweep_id": ctx.sweep_id, "num": num, "overrides": list(overrides)}
    if "error" in fields:
        outcome["error"] = fields["error"]
    if fields.get("reused_run_id"):
        outcome["reused_run_id"] = fields["reused_run_id"]
    RunFolder(folder).sweep_job.write_text(json.dumps(outcome, indent=2), encoding="utf-8")


def _leave_measured(state: _Arm) -> None:
    if state.error is not None or state.ended is None:
        _leave(state.arm, {"error": state.error or "the study stopped before this arm was measured"})
        return
    ended = state.ended
    _leave(
        state.arm,
        {
            "status": str(ended.status),
            "metrics": ended.metrics,
            "failure": ended.failure,
            "measured_any": ended.measured_any,
        },
    )


def _upload_all(arms: list[_Arm]) -> None:
    """A study stopped by a signal uploads what its arms measured before the process ends."""
    for state in arms:
        if state.ended is not None and state.ended.measured_any and state.setup.cfg.tracking.enabled:
            upload(state.setup.cfg, state.setup.ctx)
