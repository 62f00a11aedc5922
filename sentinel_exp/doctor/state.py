"""The doctor's folder and what it remembers (doctor.json): which steps finished, where their runs
are, and the machine time they took, so that a rerun of an interrupted doctor resumes. The earlier
doctor of the same configuration is found in this folder (a rerun with the same hydra.run.dir) or
through the MLflow store (its parent run's tags name its folder)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sentinel_exp import tags as tag
from sentinel_exp.config.schema import ExperimentConfig
from sentinel_exp.store.run_folder import RunFolder

log = logging.getLogger(__name__)


@dataclass
class DoctorState:
    folder: str  # the doctor's own folder (absolute)
    identity: str  # the config hash of the configuration diagnosed
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # its parent run's uid
    baseline: str | None = None  # the folder of the finished baseline run
    studies: dict[str, str] = field(default_factory=dict)  # cause -> the folder of its finished study
    spent_s: float = 0.0  # machine time of the finished steps
    finished: bool = False  # the whole plan ran
    resumed_from: str | None = None

    def save(self) -> None:
        path = RunFolder(Path(self.folder)).doctor
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    def fresh_folder(self, name: str) -> Path:
        """A new folder for a step: `name`, or `name-2`, `name-3`... where an interrupted try left one."""
        base = Path(self.folder)
        path, n = base / name, 1
        while path.exists():
            n += 1
            path = base / f"{name}-{n}"
        path.mkdir(parents=True)
        return path


def read_state(folder: Path) -> DoctorState | None:
    try:
        data = json.loads(RunFolder(folder).doctor.read_text(encoding="utf-8"))
        return DoctorState(**{k: v for k, v in data.items() if k in DoctorState.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def previous_in_store(cfg: ExperimentConfig, identity: str) -> Path | None:
    """The folder of the latest doctor of this configuration that the MLflow store knows, if any."""
    if not cfg.tracking.enabled:
        return None
    from sentinel_exp.store.tracking import RunStore

    try:
        store = RunStore(cfg.tracking.uri)
        found = store.latest_tagged(cfg.tracking.experiment, tag.DOCTOR_OF, identity, finished=False)
    except Exception as exc:  # the store is away: no resume, a fresh diagnosis
        log.debug("no earlier doctor found: %s", exc)
        return None
    folder = found.tags.get(tag.OUTPUT_DIR) if found is not None else None
    return Path(folder) if folder else None


def open_state(folder: Path, cfg: ExperimentConfig, identity: str) -> DoctorState:
    """This doctor's state: fresh, or carrying the finished steps of an earlier doctor of the same
    configuration that did not finish its plan (force=true always starts fresh)."""
    state = DoctorState(str(folder.resolve()), identity)
    if cfg.force:
        return state
    earlier = read_state(folder)
    if earlier is None:
        elsewhere = previous_in_store(cfg, identity)
        earlier = read_state(elsewhere) if elsewhere is not None else None
    if earlier is None or earlier.identity != identity or earlier.finished:
        return state
    usable = {cause: path for cause, path in earlier.studies.items() if Path(path).is_dir()}
    baseline = earlier.baseline if earlier.baseline and Path(earlier.baseline).is_dir() else None
    if baseline is None:
        return state  # the studies were planned from that baseline's evidence
    state.baseline, state.studies, state.spent_s = baseline, usable, earlier.spent_s
    state.resumed_from = earlier.folder
    return state
