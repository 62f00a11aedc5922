"""Integration tests: real servers over loopback, subprocesses, MLflow stores, the real CLI.

Every test here is marked `slow`, so `python -m pytest -m "not slow"` runs only tests/unit. The
`run_experiment` fixture runs an experiment in this process, for tests whose point is what a run
measures and logs rather than the command line around it.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from support.cli import NO_OLLAMA

from sentinel_exp.run.experiment import Outcome

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@dataclass
class ExperimentResult:
    """What an in-process run returned and printed, and the folder it wrote."""

    outcome: Outcome
    stdout: str
    stderr: str  # the console's stderr and the log lines Hydra's console handler would show
    output_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


RunExperiment = Callable[..., ExperimentResult]


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, its schema migrated. Creating one costs 4-12 s of CPU (MLflow
    runs every Alembic migration); a copy of this one opens in 0.1 s. The CLI tests still create
    theirs from scratch, two processes at once too (test_cli.py)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def run_experiment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], migrated_store: Path
) -> RunExperiment:
    """`run_experiment(cwd, *overrides)`: compose the config as the CLI does, run it in this process
    from `cwd`, with the MLflow store at `cwd`/mlflow.db (a copy of `migrated_store` where there is
    none yet) unless an override names tracking.uri.

    Errors a user can make raise (UserError and its subclasses), as they reach the CLI's handler.
    `hydra.run.dir=X` names the output folder (under `cwd`) as on the command line; otherwise it is
    outputs/<date>/<time> as Hydra's default."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from sentinel_exp.cli.app import config_dir
    from sentinel_exp.config.schema import register_configs, typed_config
    from sentinel_exp.run.context import RunContext
    from sentinel_exp.run.experiment import run

    # As cli_env does for the CLI's subprocesses: never a real Ollama by accident.
    monkeypatch.setenv("OLLAMA_HOST", NO_OLLAMA)
    monkeypatch.setenv("CI", "true")
    register_configs()

    def run_in_process(cwd: Path, *overrides: str) -> ExperimentResult:
        monkeypatch.chdir(cwd)  # relative paths in overrides resolve as from a shell in `cwd`
        run_dir = f"outputs/{datetime.now():%Y-%m-%d/%H-%M-%S-%f}"
        rest = []
        for override in overrides:
            if override.startswith("hydra.run.dir="):
                run_dir = override.split("=", 1)[1]
            else:
                rest.append(override)
        db = cwd / "mlflow.db"
        ours = not any(o.startswith("tracking.uri=") for o in rest)
        if ours:
            rest.append(f"tracking.uri=sqlite:///{db}")
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            composed = compose("config", overrides=rest, return_hydra_config=True)
        # What the CLI's RunContext gets from HydraConfig: the group choices and the task overrides.
        choices = {k: str(v) for k, v in composed.hydra.runtime.choices.items() if not k.startswith("hydra")}
        with open_dict(composed):
            del composed["hydra"]
        ctx = RunContext(
            output_dir=cwd / run_dir,
            choices=choices,
            overrides=[o for o in overrides if not o.startswith("hydra.")],
        )
        cfg = typed_config(composed)
        if ours and cfg.tracking.enabled and not db.exists():
            shutil.copyfile(migrated_store, db)
        capsys.readouterr()  # what came before belongs to the test, not the run
        with _console_logging():
            outcome = run(cfg, ctx)
        captured = capsys.readouterr()
        return ExperimentResult(outcome, captured.out, captured.err, ctx.output_dir)

    return run_in_process


class _console_logging:
    """Hydra's job_logging console handler (conf/config.yaml): INFO and up, the bare message, on
    stderr; the chatty libraries at WARNING."""

    QUIET = ("httpx", "httpcore", "mlflow", "alembic")

    def __enter__(self) -> None:
        root = logging.getLogger()
        self.handler = logging.StreamHandler(sys.stderr)  # capsys's stream, looked up now
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.levels = {name: logging.getLogger(name).level for name in ("", *self.QUIET)}
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        for name in self.QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self.handler)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
