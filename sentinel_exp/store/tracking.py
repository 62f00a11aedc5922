"""MLflow: one run per experiment, flat names (see docs/measurement.md, Metrics), batched writes."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel_exp import tags as tag
from sentinel_exp.errors import StoreUnavailable, UserError
from sentinel_exp.names import Role, RunStatus
from sentinel_exp.store.locks import exclusive
from sentinel_exp.store.run_folder import RunFolder, RunSummary
from sentinel_exp.store.writable import sqlite_problem

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
_BATCH_METRICS = 1000
_BATCH_PARAMS = 100


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dot paths for nested dicts; lists stay whole (JSON), as MLflow params must be scalars."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


# Settings that change how results are shown, judged, organised or repeated, not what is measured:
# runs that differ only in these are runs of one configuration (repeats compare as such).
NOT_MEASURED = (
    "tracking",
    "progress",
    "sweep",
    "compare",
    "slo",
    "diagnose",
    "repeat",
    "arm",
    "force",
    "plots",
    "lint",
)


# Settings added after runs had been logged, each with the value that means "as before": at that
# value a setting stays out of the hash, so a configuration measured before it existed still has
# the same identity (a sweep resumes across an upgrade). A new setting is added here.
ADDED_SETTINGS: Mapping[str, Any] = {
    "workload.cold_start": False,
    "workload.think_time_s": 0,
    "workload.idle_every": 0,
    "workload.idle_s": 0,
    "workload.prompts_file": None,
    "workload.input_tokens": None,
    "workload.unique_prompts": False,
    "server.sim.gpu_fraction": 0,
    "server.sim.drift_pct": 0,
    "server.sim.drift_period_s": 120,
    "server.sim.spell_pct": 0,
    "server.sim.spell_every_s": 20,
    "server.sim.spell_s": 2,
    "server.sim.noise_epoch": 0,
    "workload.max_error_rate": None,
    "workload.error_rate_min_requests": 10,
    "telemetry.prometheus_url": None,
    "telemetry.prometheus_interval_s": 1.0,
}


def config_hash(resolved: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> str:
    """Identity of what was measured: everything but NOT_MEASURED, ADDED_SETTINGS at their
    former behaviour, and `inputs`: digests of the files settings name (a path says nothing of
    what the file held when the run read it)."""
    relevant = copy.deepcopy({k: v for k, v in resolved.items() if k not in NOT_MEASURED})
    if inputs:
        relevant["inputs"] = dict(sorted(inputs.items()))
    for path, former in ADDED_SETTINGS.items():
        *parents, leaf = path.split(".")
        node: Any = relevant
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == former:
            del node[leaf]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sqlite_database(uri: str) -> Path | None:
    """The database file of a sqlite:/// store; None for any other store."""
    return Path(uri[len("sqlite:///") :]).expanduser().resolve() if uri.startswith("sqlite:///") else None


def artifact_location_for(uri: str) -> str | None:
    """Artifacts of a new experiment in a sqlite store go beside the database file, not into
    ./mlruns of whichever directory the first run happened to start in."""
    database = sqlite_database(uri)
    # None: a tracking server or another store decides for itself.
    return (database.parent / "mlruns").as_uri() if database is not None else None


@contextmanager
def store_setup_lock(uri: str) -> Iterator[None]:
    """Runs started together on a new sqlite store would both create its tables (MLflow's
    migrations are not concurrency-safe: "duplicate column name") and both create the experiment;
    they take turns for that first step."""
    database = sqlite_database(uri)
    if database is None:
        yield
        return
    key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"sentinel-exp-mlflow-{key}.lock"
    lock.touch()
    with exclusive(lock):
        yield


def quiet_client() -> None:
    """MLflow prints a "View run ... at" line to stdout for every run ended on a tracking server
    (one extra request each); the console already says where to look, once per run or sweep.
    MLflow reads these variables each time it would print."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Its "Downloading artifacts" bar for every summary.json and requests.jsonl read back (a resumed
    # sweep, a comparison from the store) would bury the tool's own lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow resets its logger to INFO on import; its store-migration chatter is noise here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def check_server_answers(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server that is down fails in seconds, not after MLflow's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        # Whether anything answers, nothing more: proxies from the environment as MLflow uses
        # them, and no certificate check (a private CA is MLflow's business, not this probe's).
        httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s, verify=False)
    except httpx.HTTPError as exc:  # any HTTP answer (even 404 behind a proxy) means it is there
        raise StoreUnavailable(
            f"the MLflow tracking server at tracking.uri={uri!r} does not answer "
            f"({type(exc).__name__}: {exc}); start it (`mlflow server`), or log to a "
            f"local store with tracking.uri=sqlite:///mlflow.db"
        ) from None


def store_check(uri: str) -> None:
    """Before a run, without importing MLflow: a sqlite store that cannot be written is the user's
    to fix (exit 2); a tracking server that does not answer only warns, as the run folder keeps
    the run until it can be uploaded."""
    database = sqlite_database(uri)
    if database is not None and (problem := sqlite_problem(database)):
        raise UserError(f"cannot use the MLflow store tracking.uri={uri!r}: {problem}")
    try:
        check_server_answers(uri, timeout_s=2.0)
    except UserError as exc:
        log.warning("warning: %s. Measuring anyway: the run folder keeps everything for a later upload", exc)


def runs_table_path(experiment_id: str) -> str:
    """The MLflow UI's runs table of an experiment, a sweep's children nested under its parent.

    MLflow 3 opens an experiment on its GenAI overview (traces, none here); `workflowType`
    switches its sidebar to model training, whose first page is this table. MLflow 2 ignores it.
    """
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def browse_hint(uri: str, experiment_id: str) -> str:
    """Where to look at runs: the runs table on a tracking server, else how to serve one and where to open it.

    The table rather than the run's own page: a sweep's jobs sit there, nested under its parent.
    """
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}{runs_table_path(experiment_id)}"
    return (
        f"browse: mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000{runs_table_path(experiment_id)}"
    )


def _auth_hint(error: str) -> str:
    """A server that asks for credentials: say where MLflow reads them."""
    if re.search(r"error code (401|403)\b", error) is None:
        return ""
    return (
        " (the server wants a user name and password it has not been given, or refuses them: MLflow reads "
        "them from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
    )


@dataclass
class FinishedRun:
    """A finished run of a configuration, as a sweep that meets it again reuses it."""

    run_id: str
    summary: RunSummary | None  # its summary.json; None when the artifact could not be read
    logged_metrics: dict[str, float]  # MLflow's latest value of each metric
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.summary.metrics) if self.summary is not None and self.summary.metrics else self.logged_metrics


class Tracker:
    """A thin, explicit wrapper over MlflowClient: no global active-run state, so a sweep
    running jobs in one process, or the telemetry thread, cannot log into the wrong run."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        quiet_client()
        self.uri = uri
        self.run_id: str | None = None
        check_server_answers(uri)
        database = sqlite_database(uri)
        if database is not None and (problem := sqlite_problem(database)):
            raise UserError(f"cannot use the MLflow store tracking.uri={uri!r}: {problem}")
        try:
            with store_setup_lock(uri):
                self.client = MlflowClient(tracking_uri=uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=artifact_location_for(uri)
                    )
                else:
                    if found.lifecycle_stage == "deleted":
                        self.client.restore_experiment(found.experiment_id)
                    self.experiment_id = found.experiment_id
        except Exception as exc:  # MlflowException, SQLAlchemy or OS errors: all a store the user named
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"cannot use the MLflow store tracking.uri={uri!r} with experiment {experiment!r}: {first_line}"
                + _auth_hint(first_line)
            ) from None

    @property
    def started_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("Tracker.start() first")  # a bug in the caller, not a user error
        return self.run_id

    def finished_run(self, config_hash: str, repeat: int) -> FinishedRun | None:
        """The latest FINISHED run of this configuration and repeat in the experiment, if any
        (a run without a `sentinel.repeat` tag is repeat 0)."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tag.CONFIG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=100,
        )
        for run in found:
            if run.data.tags.get(tag.REPEAT, "0") == str(repeat):
                run_id = run.info.run_id
                return FinishedRun(run_id, self._summary_of(run_id), dict(run.data.metrics), dict(run.data.tags))
        return None

    def copy_artifact(self, run_id: str, name: str, to: Path) -> bool:
        """A run's artifact `name` copied to `to`; False when the run logged none (or it is
        unreachable)."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(self.client.download_artifacts(run_id, name, tmp))
                to.write_bytes(path.read_bytes())
        except Exception as exc:
            log.debug("no %s for run %s: %s", name, run_id, exc)
            return False
        return True

    def _summary_of(self, run_id: str) -> RunSummary | None:
        """The summary.json a run logged, the exact per-run metrics (MLflow's latest values would
        mix in the last point of each telemetry series)."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(self.client.download_artifacts(run_id, RunFolder.SUMMARY, tmp))
                return RunSummary.from_json(path.read_text(encoding="utf-8"))
        except Exception as exc:  # a store without the artifact, or unreachable artifacts: the metrics stand in
            log.debug("no %s for run %s: %s", RunFolder.SUMMARY, run_id, exc)
            return None

    def start(self, run_name: str, tags: Mapping[str, str], start_ms: int | None = None) -> str:
        run = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        return self.run_id

    def attach(self, run_id: str) -> None:
        """Go on logging into a run created before (an upload that was cut short)."""
        self.run_id = run_id

    def find_uid(self, uid: str) -> tuple[str, str] | None:
        """(run id, status) of the live run uploaded from the run folder `uid`, if any."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tag.RUN_UID}` = '{uid}'", max_results=1
        )
        return (found[0].info.run_id, found[0].info.status) if found else None

    def running_here(self, host: str) -> list[tuple[str, dict[str, str]]]:
        """(run id, tags) of the runs still RUNNING that a process on `host` started."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{tag.RUNNER_HOST}` = '{host}'",
            max_results=1000,
        )
        return [(run.info.run_id, dict(run.data.tags)) for run in found]

    def close(self, run_id: str, status: RunStatus) -> None:
        self.client.set_terminated(run_id, status=status)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.started_run, tags=items[i : i + _BATCH_PARAMS])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.started_run, params=items[i : i + _BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        when = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._log_metric_points((k, float(v), when, step) for k, v in metrics.items())

    def log_series(self, points: Iterable[Sequence[Any]]) -> None:
        """(key, value, timestamp_ms, step) points, written one log_batch per chunk."""
        self._log_metric_points((k, float(v), int(ts), int(step)) for k, v, ts, step in points)

    def _log_metric_points(self, points: Iterable[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        batch: list[Metric] = []
        for key, value, timestamp, step in points:
            if value != value:  # NaN: MLflow stores it, but comparisons on it mislead
                continue
            batch.append(Metric(key, value, timestamp, step))
            if len(batch) == _BATCH_METRICS:
                self.client.log_batch(self.started_run, metrics=batch)
                batch = []
        if batch:
            self.client.log_batch(self.started_run, metrics=batch)

    def log_artifact(self, path: Path, subdir: str | None = None) -> None:
        if path.exists():
            self.client.log_artifact(self.started_run, str(path), artifact_path=subdir)

    def end(self, status: RunStatus, end_ms: int | None = None) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status, end_time=end_ms)


@dataclass(frozen=True)
class StoredRun:
    """A finished run read back from an MLflow store."""

    run_id: str
    name: str
    status: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


class RunStore:
    """Reading runs back for a comparison: by parent (a sweep), experiment and filter, or id."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        quiet_client()
        check_server_answers(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def _stored(self, run: Any) -> StoredRun:
        return StoredRun(
            run.info.run_id,
            run.info.run_name or run.info.run_id,
            run.info.status,
            int(run.info.start_time or 0),
            dict(run.data.params),
            dict(run.data.metrics),
            dict(run.data.tags),
        )

    def experiment_ids(self, name: str | None) -> list[str]:
        if name is None:
            return [e.experiment_id for e in self.client.search_experiments()]
        found = self.client.get_experiment_by_name(name)
        if found is None:
            raise UserError(f"no experiment named {name!r} in {self.uri}")
        return [found.experiment_id]

    def search(self, experiment: str | None, filter_string: str = "") -> list[StoredRun]:
        """Runs in start order, sweep parents left out (they measured nothing themselves)."""
        try:
            runs = self.client.search_runs(
                self.experiment_ids(experiment), filter_string=filter_string, max_results=5000, order_by=["start_time"]
            )
        except Exception as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"MLflow cannot search {self.uri} with {filter_string!r}: {exc}") from None
        return [self._stored(run) for run in runs if run.data.tags.get(tag.ROLE) != Role.SWEEP]

    def latest_tagged(self, experiment: str, tag: str, value: str, finished: bool = True) -> StoredRun | None:
        """The latest FINISHED run of the experiment with tag == value (`finished` False: in any
        status), sweep parents included (an A/A study's noise is its parent's); None when there is
        none or the store cannot say."""
        status = " and attributes.status = 'FINISHED'" if finished else ""
        try:
            ids = self.experiment_ids(experiment)
            found = self.client.search_runs(
                ids,
                filter_string=f"tags.`{tag}` = '{value}'{status}",
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
        except Exception as exc:
            log.debug("no run tagged %s=%s: %s", tag, value, exc)
            return None
        return self._stored(found[0]) if found else None

    def children(self, parent_run_id: str) -> list[StoredRun]:
        parent = self.get(parent_run_id)
        experiment = self.client.get_experiment(self.client.get_run(parent.run_id).info.experiment_id).name
        return self.search(experiment, f"tags.{tag.PARENT_RUN_ID} = '{parent.run_id}'")

    def get(self, run_id: str) -> StoredRun:
        try:
            return self._stored(self.client.get_run(run_id))
        except Exception:
            raise UserError(f"no run {run_id!r} in {self.uri}") from None

    def records_file(self, run_id: str, into: Path) -> Path | None:
        """The run's requests.jsonl, downloaded into `into`; None when the run logged none."""
        try:
            return Path(self.client.download_artifacts(run_id, RunFolder.RECORDS, str(into)))
        except Exception:
            return None

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))
