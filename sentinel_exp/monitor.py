"""Telemetry for one run: the sampler, the hardware check and the environment fingerprint,
tied to the run's phases and named for MLflow (DESIGN.md section 2)."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from sentinel_exp.servers import ServerHandle

log = logging.getLogger(__name__)


class RunMonitor:
    def __init__(self, telemetry_cfg: Any, hardware_cfg: Any, handle: ServerHandle) -> None:
        self.cfg = telemetry_cfg
        self.hardware_cfg = hardware_cfg
        self.handle = handle
        self._tags: dict[str, str] = {}
        self._notes: list[str] = []
        self._samples: list[Any] = []

    def check_hardware(self) -> None:
        pass

    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def late_tags(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        pass

    def mark_phase(self, phase: str) -> None:
        pass

    def stop(self) -> None:
        pass

    def metrics(self, output_tokens: int) -> dict[str, float]:
        return {}

    def series(self) -> Iterable[Sequence[Any]]:
        return []

    def notes(self) -> list[str]:
        return list(self._notes)
