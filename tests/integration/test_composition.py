"""Every shipped choice composed through Hydra itself, as the CLI composes, and the quick
`variant` of the unit tests checked against it."""

import importlib.util

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf
from support.compose import NotPlain, composed, plain_group_file, variant
from support.require import require

from sentinel_exp.cli.app import config_dir
from sentinel_exp.config.schema import ExperimentConfig, register_configs, typed_config

register_configs()
GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir())
CHOICES = [(g, p.stem) for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
# sweep=diagnose is the doctor: one command that plans its own studies, not a sweep of given values.
PRESETS = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml") if p.stem not in ("none", "diagnose"))
OURS = "hydra_plugins.sentinel_exp_sweeper.sentinel_sweeper.SentinelSweeper"


@pytest.mark.parametrize(("group", "choice"), CHOICES)
def test_each_choice_composes_validates_and_matches_the_quick_variant(group, choice):
    if (group, choice) == ("sweep", "optuna"):
        require(HAS_OPTUNA, "the optuna extra is not installed (pip install -e '.[optuna]')")
    hydra_made = composed(f"{group}={choice}")
    assert isinstance(typed_config(hydra_made), ExperimentConfig)
    try:
        plain_group_file(group, choice)
    except NotPlain:
        return
    assert OmegaConf.to_container(variant(f"{group}={choice}")) == OmegaConf.to_container(hydra_made)


@pytest.mark.parametrize(
    "overrides",
    [
        ("server=openai", "workload.api=generate"),
        ("server.sim.faults={0:http_500}", "server.sim.tokens=3"),
        ("+workload.think=1",),
        ("hardware=cpu_only", "options=low_ctx", "ablation=num_ctx"),
        ("slo.ttft_ms_p50=300", "slo.request.ttft_ms=50", "tracking.experiment=' '"),
    ],
)
def test_the_quick_variant_applies_values_as_hydra_does(overrides):
    assert OmegaConf.to_container(variant(*overrides)) == OmegaConf.to_container(composed(*overrides))


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_is_a_named_multirun(name):
    if name == "optuna":
        require(HAS_OPTUNA, "the optuna extra is not installed (pip install -e '.[optuna]')")
    cfg = composed(f"sweep={name}", hydra=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.hydra.sweeper.params
    assert cfg.sweep.name == name and cfg.sweep.description
    assert (cfg.hydra.sweeper._target_ == OURS) is (name != "optuna")


def test_the_doctor_preset_is_a_single_run_that_plans_its_own_studies():
    cfg = composed("sweep=diagnose", hydra=True)
    assert cfg.hydra.mode != RunMode.MULTIRUN and not cfg.hydra.sweeper.get("params")
    assert cfg.sweep.name == "diagnose" and cfg.sweep.description
    assert cfg.diagnose.budget_s == 600


def test_a_plain_sweep_gets_the_ordering_sweeper_too():
    assert composed(hydra=True).hydra.sweeper._target_ == OURS


@pytest.mark.skipif(not HAS_OPTUNA, reason="the optuna extra is not installed")
def test_optuna_searches_the_runner_options_for_the_objective():
    cfg = composed("sweep=optuna", "sweep.direction=maximize", "sweep.objective=output_tokens_per_s", hydra=True)
    assert set(cfg.hydra.sweeper.params) == {
        "options.num_ctx",
        "options.num_batch",
        "options.num_thread",
        "options.num_gpu",
    }
    assert cfg.hydra.sweeper.n_trials == 20 and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.sweeper.storage is None
