"""MLflow as an upload of a run folder (`run_folder.py`): after a run, by `python -m sentinel_exp.sync`
later, or when a run finds one that a killed process left RUNNING in its store.

An upload is idempotent: the MLflow run carries the folder's uid (tag `sentinel.run_uid`); a run
already complete in the store is left as it is, and one cut short is completed, not made twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_exp import tags as tag
from sentinel_exp.analysis.diagnosis import diagnose
from sentinel_exp.analysis.stats import error_breakdown, summarize
from sentinel_exp.errors import UserError
from sentinel_exp.names import Phase, Role, RunStatus
from sentinel_exp.records import RequestRecord, iter_records
from sentinel_exp.store.locks import exclusive
from sentinel_exp.store.run_folder import (
    RunFile,
    RunFolder,
    Runner,
    RunSummary,
    read_run_file,
    read_series,
    write_run_file,
)

if TYPE_CHECKING:
    from sentinel_exp.store.tracking import Tracker

log = logging.getLogger(__name__)

# Always uploaded when present; a run adds its report and server log to run.json's artifacts.
STANDARD_ARTIFACTS = (RunFolder.RECORDS, RunFolder.CONFIG, RunFolder.SUMMARY)


@dataclass(frozen=True)
class Uploaded:
    run_id: str
    uri: str
    experiment_id: str
    already: bool  # the store held this run complete before: nothing was written
    status: RunStatus


def records_in(folder: Path) -> list[RequestRecord]:
    """The records a folder holds; a last line cut by a kill is left out, the ones before stand."""
    path = RunFolder(folder).records
    if not path.exists():
        return []
    records: list[RequestRecord] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.extend(iter_records([line]))
        except (ValueError, TypeError):
            continue
    return records


def abandoned_summary(records: list[RequestRecord], run: RunFile, reason: str) -> RunSummary:
    """summary.json for a run whose process ended without writing one: the metrics of the
    measured records it left (the measured phase taken from the first start to the last end)."""
    measured = [r for r in records if r.phase == Phase.MEASURED]
    starts = [r.started_at for r in measured if r.started_at]
    ends = [r.started_at + (r.e2e_ms or 0.0) / 1000 for r in measured if r.started_at]
    metrics = summarize(records, (max(ends) - min(starts)) if starts else None)
    verdict = diagnose(records, metrics)
    metrics.update(verdict.metrics())
    return RunSummary(
        run_uid=run.uid,
        run_name=run.run_name,
        status=RunStatus.FAILED,
        metrics=metrics,
        errors=error_breakdown(records),
        warnings=[reason],
        verdict=verdict.lines(),
        failure=reason,
    )


def _last_record_ms(records: list[RequestRecord]) -> int | None:
    ends = [r.started_at + (r.e2e_ms or 0.0) / 1000 for r in records if r.started_at]
    return int(max(ends) * 1000) if ends else None


def close_abandoned(folder: Path, run: RunFile, *, runner_unknown_ok: bool = False) -> RunFile:
    """A run folder left RUNNING by a process that is gone becomes FAILED, summarised from what it
    holds. A run whose process is still alive, or ran on another host and `runner_unknown_ok` is
    not given, is refused."""
    gone = run.runner.gone()
    if gone is False:
        raise UserError(f"{folder} is still being measured (pid {run.runner.pid}); sync it once it has ended")
    if gone is None and not runner_unknown_ok:
        raise UserError(
            f"{folder} is RUNNING, measured on host {run.runner.host}, where this process cannot see whether "
            f"pid {run.runner.pid} is still alive; sync it there, or pass --close-running to close it as FAILED"
        )
    records = records_in(folder)
    reason = (
        f"the runner (pid {run.runner.pid} on {run.runner.host}) ended without closing the run; "
        f"closed as FAILED with the {len(records)} record(s) it left"
    )
    if run.role == Role.RUN and not RunFolder(folder).summary.exists():
        summary = abandoned_summary(records, run, reason)
        summary.write(folder)
        _complete_abandoned(folder, run, records, summary)
    run.status, run.failure = RunStatus.FAILED, reason
    run.end_ms = _last_record_ms(records) or run.start_ms
    write_run_file(folder, run)
    return run


def _complete_abandoned(folder: Path, run: RunFile, records: list[RequestRecord], summary: RunSummary) -> None:
    """What the killed process would have added at its end: the verdict's tag, the bundled
    server's log and, unless the run had plots=false, the report and its figures."""
    if summary.verdict:
        run.tags[tag.VERDICT] = "\n".join(summary.verdict)
    if RunFolder(folder).server_log.is_file():
        run.artifacts.append(RunFolder.SERVER_LOG)
    if run.params.get("plots") == "false":
        return
    from sentinel_exp.report.markdown import write_run_artifacts

    try:
        written = write_run_artifacts(folder, records, [], summary)
    except Exception as exc:  # the pictures are extras: the run is closed and uploaded without them
        log.warning("warning: could not draw the plots of %s: %s: %s", folder, type(exc).__name__, exc)
        return
    run.artifacts += [path.name for path in written if path.name not in run.artifacts]


def _metrics(folder: Path) -> dict[str, float]:
    summary = RunSummary.read(folder)
    return summary.metrics if summary is not None else {}


def _artifacts(folder: Path, run: RunFile) -> list[Path]:
    names = list(dict.fromkeys([*STANDARD_ARTIFACTS, *run.artifacts]))
    paths = [Path(name) if Path(name).is_absolute() else folder / name for name in names]
    return [path for path in paths if path.is_file()]


def find_sweep_folder(folder: Path, uid: str) -> Path | None:
    """The sweep folder of a job folder: the nearest folder above it whose run.json has `uid`."""
    for above in folder.resolve().parents:
        if RunFolder(above).run_json.is_file():
            try:
                if read_run_file(above).uid == uid:
                    return above
            except UserError:
                continue
    return None


OpenStore = Callable[[str, str], "Tracker"]

# One Tracker per store and experiment in a process: the jobs of a sweep open MLflow once.
_SHARED: dict[tuple[str, str], Tracker] = {}


def shared_tracker(uri: str, experiment: str) -> Tracker:
    from sentinel_exp.store.tracking import Tracker

    key = (uri, experiment)
    if key not in _SHARED:
        _SHARED[key] = Tracker(uri, experiment)
    return _SHARED[key]


class Uploader:
    """Uploads run folders into MLflow stores; one Tracker per (store, experiment), opened once.

    `uri` replaces each folder's own tracking.uri (sync --tracking-uri)."""

    def __init__(
        self, uri: str | None = None, runner_unknown_ok: bool = False, open_store: OpenStore = shared_tracker
    ) -> None:
        self.uri = uri
        self.runner_unknown_ok = runner_unknown_ok
        self._open = open_store
        self._trackers: dict[tuple[str, str], Tracker] = {}
        self.closed_orphans: list[str] = []  # "<run id>, left RUNNING by ... (how it was closed)"

    def _tracker(self, run: RunFile, folder: Path) -> Tracker:
        uri = self.uri or run.tracking_uri
        if not uri:
            raise UserError(f"{folder} was measured with tracking off; name a store with --tracking-uri")
        key = (uri, run.experiment)
        if key not in self._trackers:
            tracker = self._open(uri, run.experiment)
            self._trackers[key] = tracker
            self._close_orphans(tracker)
        return self._trackers[key]

    def upload(self, folder: Path, keep_open: bool = False) -> Uploaded:
        """Upload one run folder. A folder still RUNNING is closed as FAILED first when its process is
        gone; `keep_open` uploads a live sweep's parent without ending it (its jobs need its id)."""
        run = read_run_file(folder)
        if not run.ended and not (keep_open and run.runner.gone() is False):
            run = close_abandoned(folder, run, runner_unknown_ok=self.runner_unknown_ok)
        tracker = self._tracker(run, folder)
        found = tracker.find_uid(run.uid)
        if found is not None and found[1] != RunStatus.RUNNING:
            return self._done(folder, run, tracker, found[0], already=True)
        tags = {**run.tags, tag.RUN_UID: run.uid}
        if run.failure:
            tags[tag.FAILURE] = run.failure
        if run.role == Role.SWEEP:
            tags[tag.ROLE] = Role.SWEEP
        parent = self._parent_id(run, folder)
        if parent is not None:
            tags[tag.PARENT_RUN_ID] = parent
        if found is None:
            # The uid and runner tags from the start: a cut-short upload is found by them and completed.
            tracker.start(run.run_name, tags, start_ms=run.start_ms)
        else:
            tracker.attach(found[0])
            tracker.set_tags(tags)
        tracker.log_params(run.params)
        if not run.ended:
            return self._done(folder, run, tracker, tracker.started_run, already=False)
        tracker.log_metrics(_metrics(folder), timestamp_ms=run.end_ms)
        tracker.log_series(read_series(folder))
        for path in _artifacts(folder, run):
            tracker.log_artifact(path)
        tracker.end(run.status, run.end_ms)
        return self._done(folder, run, tracker, tracker.started_run, already=False)

    def _done(self, folder: Path, run: RunFile, tracker: Tracker, run_id: str, already: bool) -> Uploaded:
        if (run.mlflow_run_id, run.mlflow_uri) != (run_id, tracker.uri):
            run.mlflow_run_id, run.mlflow_uri = run_id, tracker.uri
            write_run_file(folder, run)
        return Uploaded(run_id, tracker.uri, tracker.experiment_id, already, run.status)

    def _parent_id(self, run: RunFile, folder: Path) -> str | None:
        """The MLflow run of the sweep a job belongs to, uploaded first from its folder when the
        store does not hold it yet (the store was down when the sweep began)."""
        if run.parent_uid is None:
            return None
        found = self._tracker(run, folder).find_uid(run.parent_uid)
        if found is not None:
            return found[0]
        sweep_folder = find_sweep_folder(folder, run.parent_uid)
        if sweep_folder is None:
            log.warning("warning: the sweep folder of %s is not above it: uploaded without its parent run", folder)
            return None
        # The sweep's jobs (joblib's processes, syncs run side by side) may all find it missing
        # at once: they take turns, and the first one's upload is the others' parent.
        with exclusive(sweep_folder):
            found = self._tracker(run, folder).find_uid(run.parent_uid)
            if found is not None:
                return found[0]
            return self.upload(sweep_folder, keep_open=True).run_id

    def _close_orphans(self, tracker: Tracker) -> None:
        """Runs this host's processes left RUNNING in the store and that are gone (kill -9, power
        loss): completed from their folders where those still exist, else closed as FAILED."""
        import socket

        for run_id, tags in tracker.running_here(socket.gethostname()):
            try:
                runner = Runner.from_tags(tags)
            except (KeyError, ValueError):
                continue
            if runner.gone() is not True:
                continue
            folder = Path(tags.get(tag.OUTPUT_DIR, ""))
            try:
                if RunFolder(folder).run_json.is_file() and read_run_file(folder).uid == tags.get(tag.RUN_UID):
                    uploaded = self.upload(folder)
                    self.closed_orphans.append(
                        f"{run_id}, left RUNNING by a process that is gone ({uploaded.status}, from {folder})"
                        + _left_running(folder)
                    )
                    continue
            except UserError as exc:
                log.warning("warning: could not complete run %s from %s: %s", run_id, folder, exc)
            tracker.close(run_id, RunStatus.FAILED)
            self.closed_orphans.append(
                f"{run_id}, left RUNNING by a process that is gone (FAILED; its folder {folder} is gone)"
            )


def _left_running(sweep_folder: Path) -> str:
    """The job folders a killed sweep left RUNNING under its folder, and how to close them: the
    next run closes the sweep's parent, but a job's run is made only by uploading its folder."""
    running = []
    for path in sorted(sweep_folder.rglob(RunFolder.RUN_JSON)):
        if path.parent == sweep_folder:
            continue
        try:
            if not read_run_file(path.parent).ended:
                running.append(str(path.parent))
        except UserError:
            continue
    if not running:
        return ""
    return (
        f"; its job folder{'s' if len(running) > 1 else ''} {', '.join(running)} "
        f"{'are' if len(running) > 1 else 'is'} still RUNNING: python -m sentinel_exp.sync {sweep_folder}"
    )


def where_logged(uploaded: Uploaded) -> str:
    from sentinel_exp.store.tracking import browse_hint

    return f"MLflow run {uploaded.run_id} in {uploaded.uri}  ({browse_hint(uploaded.uri, uploaded.experiment_id)})"


def upload_now(folder: Path, keep_open: bool = False) -> tuple[Uploaded, str]:
    """Upload a run folder that this process has just ended (or a live sweep's parent, `keep_open`):
    the upload and the line that says where it went."""
    uploader = Uploader()
    uploaded = uploader.upload(folder, keep_open=keep_open)
    for closed in uploader.closed_orphans:
        log.warning("warning: closed run %s", closed)
    return uploaded, where_logged(uploaded)
