"""The run folder is a run's source of truth; MLflow holds an upload of it (`upload.py`).

`run.json` says what the run is (its name, tags, params, start and end times, status, the process
that measured it); `requests.jsonl`, `summary.json`, `telemetry.jsonl` and the report beside it hold
what it measured. Each change to `run.json` replaces the file whole, so a kill at any moment
leaves either the old or the new text, never half of one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import psutil

from sentinel_exp import tags as tag
from sentinel_exp.errors import UserError
from sentinel_exp.names import Role, RunStatus

FORMAT = 1


@dataclass(frozen=True)
class RunFolder:
    """A run's folder and the name of every file in it: the one place those names are spelt.

    A sweep's folder is a run folder too (its parent run's run.json), with the sweep's own files.
    The upper-case names are the bare file names, for what names a file without a folder at hand
    (an MLflow artifact, a search below a folder); the properties are the paths in this folder."""

    path: Path

    RUN_JSON: ClassVar[str] = "run.json"
    RECORDS: ClassVar[str] = "requests.jsonl"
    SUMMARY: ClassVar[str] = "summary.json"
    TELEMETRY: ClassVar[str] = "telemetry.jsonl"
    CONFIG: ClassVar[str] = "config.yaml"
    REPORT: ClassVar[str] = "report.md"
    LATENCY_CDF: ClassVar[str] = "latency_cdf.png"
    TIMELINE: ClassVar[str] = "timeline.png"
    SERVER_LOG: ClassVar[str] = "server.log"  # a bundled server's log, kept beside the records
    # A sweep's folder and its jobs' folders.
    SWEEP_JOB: ClassVar[str] = "sweep_job.json"  # in each job's folder: its outcome, for the closing table
    SWEEP_JSON: ClassVar[str] = "sweep.json"  # in the sweep folder: the sweep's id, its jobs' parent uid
    COMPARE: ClassVar[str] = "compare.md"
    NOISE: ClassVar[str] = "noise.md"  # an A/A sweep's (sweep=aa): this machine's noise per metric
    MULTIRUN: ClassVar[str] = "multirun.yaml"  # Hydra's record of the sweep's overrides
    # An interleaved study's (run/rounds.py): its design as it ran and its log, in the sweep folder,
    # and in each arm's folder the ended run its Hydra job adopts and uploads.
    STUDY: ClassVar[str] = "study.json"
    STUDY_LOG: ClassVar[str] = "study.log"
    STUDY_ARM: ClassVar[str] = "study_arm.json"
    # In the folder of a job that reused an earlier run: that run's records, for the comparison.
    REUSED_RECORDS: ClassVar[str] = "reused_requests.jsonl"
    # The doctor's folder (sweep=diagnose): the steps it finished, for a rerun to resume from.
    DOCTOR: ClassVar[str] = "doctor.json"

    @property
    def run_json(self) -> Path:
        return self.path / self.RUN_JSON

    def partial_run_json(self, pid: int) -> Path:
        """Where run.json is written before it is renamed over the old one."""
        return self.path / f".{self.RUN_JSON}.{pid}.tmp"

    @property
    def records(self) -> Path:
        return self.path / self.RECORDS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def telemetry(self) -> Path:
        return self.path / self.TELEMETRY

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def latency_cdf(self) -> Path:
        return self.path / self.LATENCY_CDF

    @property
    def timeline(self) -> Path:
        return self.path / self.TIMELINE

    @property
    def server_log(self) -> Path:
        return self.path / self.SERVER_LOG

    @property
    def sweep_job(self) -> Path:
        return self.path / self.SWEEP_JOB

    @property
    def sweep_json(self) -> Path:
        return self.path / self.SWEEP_JSON

    @property
    def compare(self) -> Path:
        return self.path / self.COMPARE

    @property
    def noise(self) -> Path:
        return self.path / self.NOISE

    @property
    def multirun(self) -> Path:
        return self.path / self.MULTIRUN

    @property
    def study(self) -> Path:
        return self.path / self.STUDY

    @property
    def study_log(self) -> Path:
        return self.path / self.STUDY_LOG

    @property
    def study_arm(self) -> Path:
        return self.path / self.STUDY_ARM

    @property
    def reused_records(self) -> Path:
        return self.path / self.REUSED_RECORDS

    def records_or_reused(self) -> Path | None:
        """The job's records: its own, or those of the earlier run it reused; None: neither."""
        return next((path for path in (self.records, self.reused_records) if path.is_file()), None)

    def sweep_cdfs(self, metric: str) -> Path:
        return self.path / f"{metric}_cdfs.png"

    def sweep_percentiles(self, metric: str) -> Path:
        return self.path / f"{metric}_percentiles.png"

    @property
    def doctor(self) -> Path:
        return self.path / self.DOCTOR

    def doctor_ladder(self, cause: str) -> Path:
        """The doctor's figure of one hypothesis's ladder (a setting's rungs)."""
        return self.path / f"{cause}_ladder.png"


def now_ms() -> int:
    return int(time.time() * 1000)


# Where the kernel's boot-relative start of a process cannot be read (not Linux), its start on the
# wall clock is compared, which moves with the clock: psutil adds the boot time to the ticks since
# boot, and the boot time it reads moves as the clock is adjusted (on this project's VM, by 20 s in
# under an hour), hence the slack. A pid reused within 2 s of the first process's start is not guarded against.
SAME_START_S = 2.0


def boot_start(pid: int) -> tuple[str, int] | None:
    """The boot a process runs in and its start in clock ticks since that boot: an identity no
    clock adjustment changes (Linux; None elsewhere, or when the process is gone or a zombie).
    PermissionError: the process exists, but /proc hides it from this user (hidepid=1)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except PermissionError:
        raise
    except OSError:
        return None
    # After the command name, in parentheses that it may itself contain: state is the 3rd field,
    # starttime the 22nd.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X") or not fields[19].isdigit():
        return None
    return boot_id, int(fields[19])


@dataclass(frozen=True)
class Runner:
    """The process that measures a run. Its start tells it from a later process that was given
    the same pid: the boot and the ticks since boot where the kernel says them, else the wall
    clock's reading of it."""

    pid: int
    host: str
    started: float  # wall clock, unix s
    boot_id: str | None = None
    start_ticks: int | None = None

    @classmethod
    def this_process(cls) -> Runner:
        try:
            boot_id, ticks = boot_start(os.getpid()) or (None, None)
        except PermissionError:
            boot_id, ticks = None, None
        return cls(os.getpid(), socket.gethostname(), psutil.Process().create_time(), boot_id, ticks)

    def gone(self) -> bool | None:
        """Whether the process has ended; None when it ran on another host (it cannot be told)."""
        if self.host != socket.gethostname():
            return None
        if self.boot_id is not None and self.start_ticks is not None:
            try:
                return boot_start(self.pid) != (self.boot_id, self.start_ticks)
            except PermissionError:  # another user's, under hidepid=1: it exists
                return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > SAME_START_S
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return True
        except psutil.Error:  # AccessDenied: it exists
            return False

    def tags(self) -> dict[str, str]:
        return {
            tag.RUNNER_PID: str(self.pid),
            tag.RUNNER_HOST: self.host,
            tag.RUNNER_STARTED: f"{self.started:.3f}",
            **({tag.RUNNER_BOOT: f"{self.boot_id}:{self.start_ticks}"} if self.boot_id else {}),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Runner:
        """The runner its tags name (KeyError, ValueError: they do not)."""
        boot_id, _, ticks = tags.get(tag.RUNNER_BOOT, "").rpartition(":")
        return cls(
            int(tags[tag.RUNNER_PID]),
            tags[tag.RUNNER_HOST],
            float(tags[tag.RUNNER_STARTED]),
            boot_id or None,
            int(ticks) if boot_id else None,
        )


@dataclass
class RunFile:
    """The contents of run.json."""

    uid: str  # the run's identity in every store it is uploaded to (tag sentinel.run_uid)
    role: Role
    run_name: str
    experiment: str
    tracking_uri: str | None  # None: tracking was off; sync then needs --tracking-uri
    runner: Runner
    start_ms: int
    status: RunStatus = RunStatus.RUNNING
    end_ms: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    parent_uid: str | None = None  # the sweep this run is a job of
    artifacts: list[str] = field(default_factory=list)  # paths relative to the folder, or absolute
    failure: str | None = None
    mlflow_run_id: str | None = None  # where it was last uploaded
    mlflow_uri: str | None = None
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> RunFile:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a run.json of format {FORMAT}")
        data["runner"] = Runner(**data["runner"])
        data["role"], data["status"] = Role(data["role"]), RunStatus(data.get("status", RunStatus.RUNNING))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def ended(self) -> bool:
        return self.status != RunStatus.RUNNING


def new_run_file(
    run_name: str,
    experiment: str,
    tracking_uri: str | None,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    parent_uid: str | None = None,
) -> RunFile:
    """A run's run.json as it starts (RUNNING), with a new uid and this process as its runner;
    `parent_uid`: the sweep it is a job of."""
    runner = Runner.this_process()
    return RunFile(
        uid=uuid.uuid4().hex,
        role=Role.RUN,
        run_name=run_name,
        experiment=experiment,
        tracking_uri=tracking_uri,
        runner=runner,
        start_ms=now_ms(),
        tags={**tags, **runner.tags()},
        params=dict(params),
        parent_uid=parent_uid,
    )


def new_sweep_file(
    run_name: str, experiment: str, tracking_uri: str | None, tags: Mapping[str, str], uid: str
) -> RunFile:
    """A sweep's parent run: it measures nothing itself; its uid is the sweep's id, which every
    job names as its parent's."""
    return replace(new_run_file(run_name, experiment, tracking_uri, tags, {}), uid=uid, role=Role.SWEEP)


def write_run_file(folder: Path, run_file: RunFile) -> None:
    """Replaces run.json whole (written beside it, then renamed over it)."""
    target = RunFolder(folder).run_json
    partial = RunFolder(folder).partial_run_json(os.getpid())
    with open(partial, "w", encoding="utf-8") as out:
        out.write(run_file.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)


def read_run_file(folder: Path) -> RunFile:
    path = RunFolder(folder).run_json
    try:
        return RunFile.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder} is not a run folder: it has no {RunFolder.RUN_JSON}") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def is_run_folder(folder: Path) -> bool:
    return RunFolder(folder).run_json.is_file()


@dataclass(frozen=True)
class SummaryServer:
    kind: str
    url: str


@dataclass
class RunSummary:
    """The contents of summary.json: what a run measured, as the report, the sweep's table and an
    upload read it. A field left None is not written (an abandoned run's summary has no server,
    model or telemetry notes); keys this version does not know are kept in `extra`, so a
    summary read from an older or newer folder is written back whole."""

    status: RunStatus | None = None  # None: a summary without one (a sweep's noise metrics)
    run_uid: str | None = None
    run_name: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] | None = None  # failed measured requests by error class
    server: SummaryServer | None = None
    model: dict[str, Any] | None = None  # the model facts the server gave (clients.ModelFacts)
    telemetry_notes: list[str] | None = None
    warnings: list[str] | None = None
    verdict: list[str] | None = None  # the diagnosis, a line each
    failure: str | None = None  # why a FAILED run failed
    slo: dict[str, Any] | None = None  # analysis.slo.SloResult.as_dict(), when any target was set
    run_id: str | None = None  # the MLflow run, where one stands for this folder (`already_done`)
    already_done: bool = False  # a sweep job that reused an earlier FINISHED run of its configuration
    study_id: str | None = None  # the interleaved study the reused run was measured in
    extra: dict[str, Any] = field(default_factory=dict)

    # The order summary.json has always had (json keeps it).
    _ORDER: ClassVar[tuple[str, ...]] = (
        "run_uid",
        "run_name",
        "status",
        "metrics",
        "errors",
        "server",
        "model",
        "telemetry_notes",
        "warnings",
        "verdict",
        "failure",
        "slo",
        "run_id",
        "already_done",
        "study_id",
    )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._ORDER:
            value = getattr(self, key)
            if value is None or (key == "already_done" and not value):
                continue
            out[key] = asdict(value) if isinstance(value, SummaryServer) else value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """A summary as any version wrote it: absent keys take their defaults, metrics that are
        not numbers are left out, and unknown keys go to `extra` (ValueError: not a summary)."""
        metrics = data.get("metrics") or {}
        server = data.get("server")
        if not isinstance(metrics, Mapping) or not (server is None or isinstance(server, Mapping)):
            raise ValueError("not a summary.json")
        return cls(
            status=RunStatus(data["status"]) if data.get("status") is not None else None,
            run_uid=data.get("run_uid"),
            run_name=data.get("run_name"),
            metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)},
            errors=data.get("errors"),
            server=None if server is None else SummaryServer(str(server.get("kind", "")), str(server.get("url", ""))),
            model=data.get("model"),
            telemetry_notes=data.get("telemetry_notes"),
            warnings=data.get("warnings"),
            verdict=data.get("verdict"),
            failure=data.get("failure"),
            slo=data.get("slo"),
            run_id=data.get("run_id"),
            already_done=bool(data.get("already_done", False)),
            study_id=data.get("study_id"),
            extra={k: v for k, v in data.items() if k not in cls._ORDER},
        )

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a summary.json")
        return cls.from_dict(data)

    def write(self, folder: Path) -> None:
        RunFolder(folder).summary.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> RunSummary | None:
        """The folder's summary.json; None when it has none, or one that cannot be read."""
        try:
            return cls.from_json(RunFolder(folder).summary.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None


class RunJournal:
    """A live run's run.json: started before the first request, amended as tags become known,
    ended with the run's status. Nothing here imports MLflow."""

    def __init__(self, folder: Path, run_file: RunFile) -> None:
        self.folder = folder
        self.run = run_file
        write_run_file(folder, run_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        fresh = {k: str(v) for k, v in tags.items() if v is not None}
        if fresh:
            self.run.tags.update(fresh)
            write_run_file(self.folder, self.run)

    def add_artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            name = str(path.relative_to(self.folder)) if path.is_relative_to(self.folder) else str(path)
            if name not in self.run.artifacts:
                self.run.artifacts.append(name)
        write_run_file(self.folder, self.run)

    def end(self, status: RunStatus, failure: str | None = None) -> None:
        self.run.status, self.run.failure, self.run.end_ms = status, failure, now_ms()
        write_run_file(self.folder, self.run)


SeriesPoint = Sequence[Any]  # (key, value, timestamp_ms, step)


def write_series(folder: Path, points: Iterable[SeriesPoint]) -> Path:
    """The telemetry series, one JSON array [key, value, timestamp_ms, step] per line."""
    path = RunFolder(folder).telemetry
    with open(path, "w", encoding="utf-8") as out:
        for key, value, timestamp, step in points:
            out.write(json.dumps([key, float(value), int(timestamp), int(step)]) + "\n")
    return path


def read_series(folder: Path) -> list[tuple[str, float, int, int]]:
    path = RunFolder(folder).telemetry
    if not path.exists():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            key, value, timestamp, step = json.loads(line)
        except ValueError:  # a line cut by a kill: the ones before it stand
            continue
        points.append((str(key), float(value), int(timestamp), int(step)))
    return points
