"""Where a run writes, and the names it is known by."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sentinel_exp.config.schema import ExperimentConfig


@dataclass
class RunContext:
    """Where a run writes, and the names it is known by."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    swept: frozenset[str] = frozenset()  # keys a sweep varies: they lead the run name
    sweep_id: str | None = None  # also the uid of the sweep's parent run: this run is one of its children
    # In a sweep, a configuration and repeat already FINISHED in the experiment is not measured
    # again (a rerun resumes where the sweep stopped); a single run always measures.
    resume: bool = False
    # The interleaved study this run is an arm of (its records' `block` are the study's rounds);
    # None: measured on its own.
    study_id: str | None = None

    def run_name(self, cfg: ExperimentConfig, server_kind: str) -> str:
        """What differs first (the swept values, then other settings changed on the command line),
        the model when no override names it, then the server: `options=low_ctx qwen2.5:0.5b @ollama`."""
        if cfg.tracking.run_name:
            return cfg.tracking.run_name
        changed = {_override_key(o): _unescape(o.lstrip("+~")) for o in self.overrides}
        shown = {
            key: text
            for key, text in changed.items()
            # The server shows as @kind; where and how results are shown changes no measurement.
            if key not in ("server", "server.kind", "progress", "plots", "lint")
            and not key.startswith(("tracking.", "hydra."))
        }
        parts = [text for key, text in shown.items() if key in self.swept]
        parts += [text for key, text in shown.items() if key not in self.swept]
        if not any(key in ("model", "model.name") for key in changed):
            parts.append(cfg.model.name)
        return f"{' '.join(parts)} @{server_kind}"[:250]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _unescape(override: str) -> str:
    """Hydra escapes `:` and other grammar characters in the overrides it records (`http\\://`)."""
    return re.sub(r"\\(.)", r"\1", override)
