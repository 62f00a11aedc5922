"""sentinel-exp's default sweeper, hydra/sweeper=sentinel (conf/config.yaml): Hydra's basic
sweeper with each configuration's runs ordered by `sweep.order` (sentinel_exp/sweeper.py).

Hydra instantiates sweepers only from the `hydra_plugins` namespace package, and finds them by
importing every module in it: this module stays a thin shell, the ordering lives in sentinel_exp.
"""

# No `from __future__ import annotations`: Hydra runs this module before it is in sys.modules,
# where dataclasses cannot look string annotations up.
import sys
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class SentinelSweeperConf:
    _target_: str = "hydra_plugins.sentinel_exp_sweeper.sentinel_sweeper.SentinelSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="sentinel", node=SentinelSweeperConf, provider="sentinel-exp")


class SentinelSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from sentinel_exp.sweeper import InterleaveError, arrange

        assert self.config is not None  # setup() comes first
        params = [f"{key}={value}" for key, value in self.params.items()]
        try:
            ordered = arrange(params + list(arguments), str(self.config.sweep.order), int(self.config.sweep.chunks))
        except InterleaveError as exc:
            from rich.markup import escape

            from sentinel_exp import console as ui
            from sentinel_exp.errors import UserError

            ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            sys.exit(UserError.exit_code)  # Hydra lets SystemExit through: a config error's status
        self.params = {}  # now inside `ordered`: BasicSweeper would put them first again
        return super().sweep(ordered)
