"""hydra/launcher=sentinel_ray: each job of a sweep as a Ray task, on a Ray cluster.

Hydra's own Ray launcher (hydra-ray-launcher, the `[cluster]` extra) does the Ray part: connecting
to the cluster and submitting each job. This launcher uses it for that and changes what a
benchmark sweep needs changed (sentinel_exp_ray/_jobs.py):

- a job lost with its worker or node is recorded as a failed job, and the other jobs finish (the
  plain launcher raises at the first one, and the driver's exit takes the running jobs with it);
- Ray does not run a lost job again (`max_retries: 0`): a job measured twice is two runs;
- Ctrl-C on the launcher stops the running jobs as Ctrl-C stops a run (each ends KILLED with what
  it measured), then the sweep closes KILLED;
- connecting to a running cluster works (the plain launcher always passes an object store size,
  which Ray refuses unless it starts the cluster itself).

Hydra imports every module of `hydra_plugins` at each start: this one imports Hydra only; Ray and
the plugin's launch code are imported when a sweep launches.
"""

# No `from __future__ import annotations`: Hydra's ConfigStore reads the dataclass annotations.
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class SentinelRayConf:
    # ray.init's arguments: `address: null` joins the cluster `ray start` made on this machine, or
    # starts one in this process; `address: auto` or `host:port` joins a running one.
    init: dict[str, Any] = field(default_factory=lambda: {"address": None})
    # ray.remote's options for each job's task, e.g. {resources: {gpu_box: 1}} to run on that node.
    remote: dict[str, Any] = field(default_factory=lambda: {"max_retries": 0})


@dataclass
class SentinelRayLauncherConf:
    _target_: str = "hydra_plugins.sentinel_exp_ray.ray_launcher.SentinelRayLauncher"
    ray: SentinelRayConf = field(default_factory=SentinelRayConf)
    # After Ctrl-C, how long the stopped jobs get to log what they measured before they are killed.
    stop_timeout_s: float = 60.0


ConfigStore.instance().store(
    group="hydra/launcher", name="sentinel_ray", node=SentinelRayLauncherConf, provider="sentinel-exp"
)


class SentinelRayLauncher(Launcher):
    def __init__(self, ray: DictConfig, stop_timeout_s: float) -> None:
        self.ray_cfg = ray
        self.stop_timeout_s = stop_timeout_s
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.sentinel_exp_ray import _jobs

        return _jobs.launch(self, job_overrides, initial_job_idx)
