"""The launch of hydra/launcher=sentinel_ray (ray_launcher.py): submit every job as a Ray task
through hydra-ray-launcher's own functions, then wait for all of them, whatever becomes of each.

The underscore keeps Hydra's plugin scan from importing this module (and Ray with it) at every
start of the command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sentinel_exp.errors import UserError

if TYPE_CHECKING:
    from hydra_plugins.sentinel_exp_ray.ray_launcher import SentinelRayLauncher

log = logging.getLogger(__name__)
WAIT_S = 1.0  # ray.wait's slice: between slices Python sees Ctrl-C
INTERRUPTED_EXIT = 130


@dataclass
class Job:
    idx: int
    overrides: list[str]
    config: DictConfig
    ref: Any  # ray.ObjectRef of the task's JobReturn


def launch(
    launcher: SentinelRayLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    ray, start_ray = _ray_parts()
    setup_globals()
    assert launcher.config is not None and launcher.hydra_context is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    start_ray(launcher.ray_cfg.init)
    remote: dict[str, Any] = OmegaConf.to_container(launcher.ray_cfg.remote, resolve=True)  # type: ignore[assignment]
    task = ray.remote(**remote)(_job_in_folder) if remote else ray.remote(_job_in_folder)
    jobs = [_submit(launcher, task, list(overrides), initial_job_idx + n) for n, overrides in enumerate(job_overrides)]
    try:
        done = _collect(ray, launcher, jobs)
    except KeyboardInterrupt:
        _stop(ray, jobs, launcher.stop_timeout_s)
        from sentinel_exp.report import console as ui

        ui.stderr.print("[yellow]interrupted: the running jobs were stopped[/]")
        sys.exit(INTERRUPTED_EXIT)
    return [done[job.idx] for job in jobs]


def _ray_parts() -> tuple[Any, Any]:
    """Ray and hydra-ray-launcher's start function; without them, one clear error."""
    try:
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray
    except ImportError as exc:
        from rich.markup import escape

        from sentinel_exp.report import console as ui

        message = (
            f"hydra/launcher=sentinel_ray needs Ray and hydra-ray-launcher (pip install 'sentinel-exp[cluster]'): {exc}"
        )
        ui.stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        sys.exit(UserError.exit_code)
    return ray, start_ray


def _job_in_folder(
    cwd: str, hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction, singleton_state: Any
) -> JobReturn:
    """The Ray task: hydra-ray-launcher's own job runner, in the launching folder where this node
    has it. The local launcher runs every job there, so relative paths (a sqlite store, a prompts
    file) mean the same on a one-machine cluster, or on nodes that share the folder."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    if os.path.isdir(cwd):
        os.chdir(cwd)
    job: JobReturn = _run_job(hydra_context, config, task_function, singleton_state)
    return job


def _submit(launcher: SentinelRayLauncher, task: Any, overrides: list[str], idx: int) -> Job:
    """One job's config composed here, as hydra-ray-launcher does, and its task submitted."""
    assert launcher.hydra_context is not None and launcher.config is not None
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with read_write(config.hydra), open_dict(config):
        # A scheduler's job id (SLURM_JOB_ID) would go here; a Ray task has none before it runs.
        config.hydra.job.id = f"job_id_for_{idx}"
        config.hydra.job.num = idx
        # The job leaves its outcome in the sweep folder, where this process reads it: the same
        # folder on any node that mounts the shared file system at the same path.
        config.hydra.sweep.dir = str(Path(str(config.hydra.sweep.dir)).absolute())
    log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    ref = task.remote(os.getcwd(), launcher.hydra_context, config, launcher.task_function, Singleton.get_state())
    return Job(idx, overrides, config, ref)


def _collect(ray: Any, launcher: SentinelRayLauncher, jobs: list[Job]) -> dict[int, JobReturn]:
    """Every job's JobReturn, in the order they end; a job lost with its worker or node is
    recorded as a failed job of the sweep, and the others go on."""
    pending = {job.ref: job for job in jobs}
    done: dict[int, JobReturn] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
        for ref in ready:
            job = pending.pop(ref)
            try:
                done[job.idx] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                done[job.idx] = _lost(launcher, job, exc)
    return done


def _lost(launcher: SentinelRayLauncher, job: Job, exc: BaseException) -> JobReturn:
    """A job whose task ended without a result (its worker or node died): failed in the sweep's
    outcome files as a job with a user error is, and handed to the sweeper as a job that measured
    nothing (the worst objective), so that the sweep goes on and ends FAILED."""
    from rich.markup import escape

    from sentinel_exp.report import console as ui
    from sentinel_exp.sweep.callbacks import failed_value, record_error

    assert launcher.hydra_context is not None
    config = job.config
    output_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
        OmegaConf.select(config, "hydra.sweep.subdir")
    )
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    message = f"lost on the Ray cluster ({type(exc).__name__}: {first_line}); its folder keeps what it measured"
    ui.stderr.print(f"[bold red]error:[/] {escape(f'job #{job.idx}: {message}')}", soft_wrap=True, highlight=False)
    record_error(Path(config.hydra.runtime.output_dir), message)
    result = JobReturn(
        overrides=job.overrides,
        cfg=config,
        hydra_cfg=config,
        working_dir=os.getcwd(),
        task_name=str(config.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=failed_value(str(config.sweep.direction)),
    )
    launcher.hydra_context.callbacks.on_job_end(config=config, job_return=result)
    return result


def _stop(ray: Any, jobs: list[Job], timeout_s: float) -> None:
    """Ctrl-C: each job still queued or running is cancelled, which a running one receives as
    Ctrl-C (it stops, ends its run KILLED and logs it); those not ended within `timeout_s`, or
    all of them at a second Ctrl-C, are killed with their worker."""
    refs = [job.ref for job in jobs]
    for ref in refs:
        ray.cancel(ref, force=False)
    try:
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    except KeyboardInterrupt:
        pass
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # ended meanwhile
            pass
