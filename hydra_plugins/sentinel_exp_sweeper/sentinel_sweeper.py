"""sentinel-exp's default sweeper, hydra/sweeper=sentinel (conf/config.yaml): Hydra's basic
sweeper (every combination), each job's config composed once (ComposeOnce), and by `sweep.order`
either one interleaved study that measures every job before they are launched (the default,
sentinel_exp/cli/study.py) or the jobs on their own, one after the other (sentinel_exp/sweep/order.py).

Hydra instantiates sweepers only from the `hydra_plugins` namespace package, and finds them by
importing every module in it: this module stays a thin shell, the ordering lives in sentinel_exp.
"""

# No `from __future__ import annotations`: Hydra runs this module before it is in sys.modules,
# where dataclasses cannot look string annotations up.
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class SentinelSweeperConf:
    _target_: str = "hydra_plugins.sentinel_exp_sweeper.sentinel_sweeper.SentinelSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="sentinel", node=SentinelSweeperConf, provider="sentinel-exp")


class ComposeOnce:
    """Hydra's config loader, with each job's config composed once. Before launching a batch, the
    sweeper composes every job of it, so that a bad combination fails before any job runs; the
    launcher then composes each job again. Kept from the check and handed to the launcher, the
    config is composed once per job instead of twice: about 0.2 s of every job's start on a
    2-core machine.

    A kept config is handed over once and then forgotten. A launcher that runs jobs in other
    processes (joblib) gets the loader without the kept configs and composes there, as before; what
    it left unclaimed is forgotten when the next batch is checked, so a long sweep holds one
    batch's configs at most.
    """

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def new_batch(self) -> None:
        """Forget the configs the last batch's launch did not claim."""
        self._kept.clear()

    @property
    def kept(self) -> int:
        return len(self._kept)

    def check(self, master_config: DictConfig, sweep_overrides: list[str]) -> None:
        """Compose one job's config (raising what Hydra raises for a bad one) and keep it."""
        key = (id(master_config), tuple(sweep_overrides))
        self._kept[key] = self._loader.load_sweep_config(master_config, sweep_overrides)

    def peek(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """A job's config, composed once and kept for the launcher: the interleaved study reads
        every job's config before the launch."""
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self._kept:
            self.check(master_config, sweep_overrides)
        return self._kept[key]

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None:
            return kept
        composed: DictConfig = self._loader.load_sweep_config(master_config, sweep_overrides)
        return composed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not the loader's: and while unpickling, _loader is not there yet
            raise AttributeError(name)
        return getattr(self._loader, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"_loader": self._loader, "_kept": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class SentinelSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # The sweeper and its launcher share this loader: what the check composes, the launch uses.
        loader = ComposeOnce(hydra_context.config_loader)
        once = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)  # type: ignore[arg-type]
        super().setup(hydra_context=once, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.hydra_context is not None and self.config is not None
        self.hydra_context.config_loader.new_batch()  # type: ignore[attr-defined]
        for overrides in batch:
            self.hydra_context.config_loader.check(self.config, list(overrides))  # type: ignore[attr-defined]

    def sweep(self, arguments: list[str]) -> Any:
        from sentinel_exp.names import SweepOrder
        from sentinel_exp.sweep.order import InterleaveError, arrange

        assert self.config is not None  # setup() comes first
        params = [f"{key}={value}" for key, value in self.params.items()]
        order = str(self.config.sweep.order)
        try:
            ordered = arrange(params + list(arguments), order)
        except InterleaveError as exc:
            _stop(str(exc))
        self.params = {}  # now inside `ordered`: BasicSweeper would put them first again
        if order != SweepOrder.interleaved:
            return super().sweep(ordered)
        return self._study(ordered)

    def _study(self, arguments: list[str]) -> Any:
        """Every job measured at once in one interleaved study (sentinel_exp/cli/study.py), then
        launched: each job uploads what the study measured for it."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        from sentinel_exp.errors import Interrupted, UserError

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
        batch = [job for batch in self.split_arguments(parsed, None) for job in batch]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(batch)
        from sentinel_exp.cli.study import measure_study, refuse_remote_launcher

        try:
            refuse_remote_launcher(self.config.hydra.launcher)
        except UserError as exc:
            _stop(str(exc))
        master = self.config
        try:
            measure_study(master, batch, lambda overrides: loader.peek(master, list(overrides)))  # type: ignore[attr-defined]
        except Interrupted as exc:
            # Every arm's folder is ended and uploaded; the entry point compares what finished and
            # closes the sweep's parent as KILLED (Hydra lets SystemExit through).
            sys.exit(exc.exit_code)
        results = self.launcher.launch(batch, initial_job_idx=0)
        for result in results:
            _ = result.return_value  # a job's unexpected exception, raised here as Hydra's sweeper does
        return [results]


def _stop(message: str) -> NoReturn:
    from rich.markup import escape

    from sentinel_exp.errors import UserError
    from sentinel_exp.report import console as ui

    ui.stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(UserError.exit_code)  # Hydra lets SystemExit through: a config error's status
