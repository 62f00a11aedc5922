"""One experiment, as a straight line (see docs/architecture.md, A run, in a straight line):

compose config -> prepare the folder -> resolve/start the server -> preflight and run.json
(LiveRun.open) -> telemetry -> warmup -> measured phase (each record appended as it finishes) ->
conclude (summary, verdict, report) and end run.json -> upload the folder to MLflow.

An arm of an interleaved study goes through the same steps (run/rounds.py), with its phases cut
into blocks; the Hydra job of such an arm only uploads what the study measured (`adopt`).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace
from typing import Any

from rich.markup import escape

from sentinel_exp import eventloop
from sentinel_exp import tags as tag
from sentinel_exp.config.schema import ExperimentConfig, to_yaml
from sentinel_exp.errors import Interrupted, RunFailed, UserError
from sentinel_exp.names import RunStatus
from sentinel_exp.report import console as ui
from sentinel_exp.run.conclusion import input_digests
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.live import Ended, RunSetup, measure_single
from sentinel_exp.run.servers import resolve_server
from sentinel_exp.store.run_folder import RunFolder, RunSummary
from sentinel_exp.store.tracking import FinishedRun, config_hash, store_check

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    run_id: str | None  # the MLflow run; None when tracking is off or the store did not take it
    status: str
    metrics: dict[str, float]
    reused: bool = False  # run_id is an earlier FINISHED run of this configuration: nothing was measured
    not_logged: str | None = None  # why the MLflow store did not take the run (its folder holds it)


def run(cfg: ExperimentConfig, ctx: RunContext) -> Outcome:
    """One run, top-down: the folder, the server, the phases, the upload."""
    adopted = adopt(cfg, ctx)
    if adopted is not None:
        return adopted
    resolved = prepare(cfg, ctx)
    if isinstance(resolved, Outcome):
        return resolved
    # The server starts before the event loop does: a blocking wait inside the loop would hold
    # Ctrl-C back until the server is ready; out here it interrupts the wait at once.
    # In a sweep, the next job's server starts from a standby process made while this one uploads.
    with resolve_server(cfg.server, cfg.model.name, ctx.output_dir, more_to_come=ctx.sweep_id is not None) as handle:
        ended = eventloop.run(measure_single(RunSetup(cfg, ctx, resolved, handle)))
    # The server stops while the run is uploaded: it is not needed for that.
    return log_and_end(cfg, ctx, ended)


def prepare(cfg: ExperimentConfig, ctx: RunContext) -> dict[str, Any] | Outcome:
    """The run's folder with its config.yaml and the MLflow store checked; an Outcome instead when
    a sweep finds this configuration already measured."""
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    if RunFolder(ctx.output_dir).records.exists():
        raise UserError(
            f"{ctx.output_dir} already holds the records of another run; give this run its "
            f"own folder (hydra.run.dir=...)"
        )
    resolved = cfg.as_dict()
    RunFolder(ctx.output_dir).config.write_text(to_yaml(resolved), encoding="utf-8")

    if not cfg.tracking.enabled:
        return resolved
    # A store that cannot be written fails before any server starts; one that does not answer
    # only warns: the run folder keeps everything until the store is back (sentinel_exp.sync).
    store_check(cfg.tracking.uri)
    if ctx.resume and not cfg.force:
        done = finished_before(cfg, resolved)
        if done is not None:
            return already_done(cfg, ctx, done)
    return resolved


def finished_before(cfg: ExperimentConfig, resolved: dict[str, Any]) -> FinishedRun | None:
    from sentinel_exp.store.upload import shared_tracker

    try:
        tracker = shared_tracker(cfg.tracking.uri, cfg.tracking.experiment)
        return tracker.finished_run(config_hash(resolved, input_digests(cfg)), cfg.repeat)
    except UserError as exc:
        log.warning("warning: cannot tell whether this configuration was measured before: %s", exc)
        return None


def already_done(cfg: ExperimentConfig, ctx: RunContext, done: FinishedRun) -> Outcome:
    """This configuration and repeat FINISHED before: the job stands for that run. Its summary and
    its records go into this job's folder, so the sweep's table and comparison see its numbers."""
    from sentinel_exp.store.upload import shared_tracker

    summary = replace(
        done.summary or RunSummary(),
        run_id=done.run_id,
        status=RunStatus.FINISHED,
        metrics=done.metrics,
        already_done=True,
        study_id=done.tags.get(tag.STUDY_ID),
    )
    tracker = shared_tracker(cfg.tracking.uri, cfg.tracking.experiment)
    tracker.copy_artifact(done.run_id, RunFolder.RECORDS, RunFolder(ctx.output_dir).reused_records)
    summary.write(ctx.output_dir)
    ui.stdout.print(f"already done ({done.run_id}): not measured again; force=true measures it anew", soft_wrap=True)
    return Outcome(done.run_id, RunStatus.FINISHED, done.metrics, reused=True)


def adopt(cfg: ExperimentConfig, ctx: RunContext) -> Outcome | None:
    """The Hydra job of an arm that an interleaved study measured: its folder holds the ended run
    (or the earlier run it reused), which is uploaded as this job's. None for any other job."""
    marker = RunFolder(ctx.output_dir).study_arm
    if not marker.is_file():
        return None
    arm = json.loads(marker.read_text(encoding="utf-8"))
    if arm.get("reused_run_id"):
        reused = RunSummary.read(ctx.output_dir)
        metrics = reused.metrics if reused is not None else {}
        return Outcome(str(arm["reused_run_id"]), RunStatus.FINISHED, metrics, reused=True)
    if arm.get("error"):
        raise UserError(str(arm["error"]))
    ended = Ended(
        status=RunStatus(arm["status"]),
        metrics=dict(arm["metrics"]),
        failure=arm.get("failure"),
        signal=None,
        measured_any=bool(arm.get("measured_any", True)),
    )
    return log_and_end(cfg, ctx, ended)


def log_and_end(cfg: ExperimentConfig, ctx: RunContext, ended: Ended) -> Outcome:
    """Upload the ended run's folder to MLflow (its server is stopping meanwhile), then end as the
    run did: exit status for a signal, RunFailed for a failure."""
    run_id, not_logged = None, None
    # Stopped before the measured phase, a run that measured nothing does not wait seconds for
    # MLflow's import to log it; where MLflow is loaded already (a sweep's jobs) it costs nothing.
    quick_exit = ended.signal is not None and not ended.measured_any
    if cfg.tracking.enabled and not (quick_exit and "mlflow" not in sys.modules):
        run_id, not_logged = upload(cfg, ctx)
    elif cfg.tracking.enabled and (ended.sent_any or ctx.sweep_id is not None):
        ui.stdout.print(escape(f"not logged to MLflow; upload it with: python -m sentinel_exp.sync {ctx.output_dir}"))
    if ended.signal is not None:
        raise Interrupted(ended.signal.name, 128 + int(ended.signal))
    if ended.failure:
        raise RunFailed(f"{ended.failure}; the run is FAILED (records: {RunFolder(ctx.output_dir).records})")
    return Outcome(run_id, ended.status, ended.metrics, not_logged=not_logged)


def upload(cfg: ExperimentConfig, ctx: RunContext) -> tuple[str | None, str | None]:
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
