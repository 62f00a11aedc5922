"""A sweep's jobs as the arms of one interleaved study (sweep.order=interleaved, the default): the
sweeper composes every job's config, this module turns them into arms with their folders and
names, and run/rounds.py measures them together. Each job then runs as Hydra runs any job, and
uploads what the study measured (run/experiment.py, `adopt`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from sentinel_exp.config.schema import typed_config
from sentinel_exp.errors import UserError
from sentinel_exp.report import console as ui
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.rounds import FILE_ONLY, StudyArm, StudyPlan, leave_error, run_study
from sentinel_exp.store.run_folder import RunFolder
from sentinel_exp.sweep.callbacks import sweep_record, swept_keys

# Composes one job's config from its overrides, as the launcher will (the sweeper's loader).
Compose = Callable[[Sequence[str]], DictConfig]

# Launchers that run each job in a process of this machine: the study measures in the launching
# process and the jobs only upload, so their folders must be this machine's.
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")

log = logging.getLogger(__name__)


def refuse_remote_launcher(launcher_config: DictConfig) -> None:
    """An interleaved study measures every arm against one server from this process; a launcher
    that runs jobs on other machines (Ray, SLURM through submitit) needs sweep.order=sequential."""
    target = str(launcher_config.get("_target_", ""))
    if target and not target.endswith(LOCAL_LAUNCHERS):
        raise UserError(
            f"sweep.order=interleaved (the default) measures all arms in this process, in rounds against one "
            f"server; the launcher {target.rsplit('.', 1)[-1]} runs jobs elsewhere: add sweep.order=sequential "
            f"to run each job where the launcher puts it"
        )


def job_folder(composed: DictConfig, num: int) -> Path:
    """The folder Hydra will give job `num`: hydra.sweep.dir / hydra.sweep.subdir."""
    job = composed.copy()
    with open_dict(job):
        job.hydra.job.num = num
        job.hydra.job.id = str(num)
    return Path(str(OmegaConf.select(job, "hydra.sweep.dir"))) / str(OmegaConf.select(job, "hydra.sweep.subdir"))


def study_arms(master: DictConfig, batch: Sequence[Sequence[str]], compose: Compose) -> list[StudyArm]:
    """Every job of the batch as an arm; a job whose config is invalid is left with its error."""
    sweep_dir = Path(str(master.hydra.sweep.dir))
    sweep_id = sweep_record(sweep_dir)
    swept = swept_keys(sweep_dir)
    arms = []
    for num, overrides in enumerate(batch):
        composed = compose(list(overrides))
        ctx = RunContext(
            output_dir=job_folder(composed, num),
            choices={k: str(v) for k, v in composed.hydra.runtime.choices.items() if not k.startswith("hydra")},
            overrides=list(overrides),
            swept=swept,
            sweep_id=sweep_id,
            resume=True,
            study_id=sweep_id,
        )
        task = composed.copy()  # what the job's task gets: Hydra's own node removed, as run_job does
        with open_dict(task):
            del task["hydra"]
        try:
            cfg = typed_config(task)
        except UserError as exc:
            log.error("#%d: %s", num, exc, extra=FILE_ONLY)
            leave_error(ctx, num, tuple(overrides), str(exc))
            continue
        arms.append(StudyArm(cfg, ctx, num, tuple(overrides)))
    return arms


def measure_study(master: DictConfig, batch: Sequence[Sequence[str]], compose: Compose) -> None:
    """Measure the sweep's jobs as one interleaved study, before Hydra launches them."""
    sweep_dir = Path(str(master.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with study_logging(RunFolder(sweep_dir).study_log):
        arms = study_arms(master, batch, compose)
        if not arms:
            return
        first = arms[0].cfg
        plan = StudyPlan(
            sweep_dir=sweep_dir,
            compare=first.compare,
            objective=first.sweep.objective,
            progress=ui.want_progress(first.progress),
        )
        run_study(arms, plan)


# As conf/config.yaml's job logging has them: their request lines would drown the study's own.
QUIET_LOGGERS = ("httpx", "httpcore", "mlflow", "alembic")


@contextmanager
def study_logging(path: Path) -> Iterator[None]:
    """The study's log lines as a job's are: the message alone on stderr, and in full in a file
    (the sweep folder's study.log), with the chatty libraries held to warnings."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in QUIET_LOGGERS})
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.handlers = [console, to_file]
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        to_file.close()
        root.handlers, level, levels = saved
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
