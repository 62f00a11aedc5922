"""Every shipped config composes against the schema; hardware recommendations merge under options."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sentinel_exp.app import config_dir
from sentinel_exp.config import config_problems, effective_options, register_configs

register_configs()
GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir())


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_contract_groups_exist():
    assert set(GROUPS) >= {"server", "model", "options", "hardware", "workload", "tracking", "sweep"}


@pytest.mark.parametrize(
    ("group", "choice"), [(g, p.stem) for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]
)
def test_each_choice_composes_and_validates(group, choice):
    cfg = composed(f"{group}={choice}")
    assert config_problems(cfg) == []


def test_defaults_match_the_design():
    cfg = composed()
    assert cfg.server.kind == "auto" and cfg.model.name == "smollm2:135m"
    assert cfg.tracking.uri == "sqlite:///mlflow.db" and cfg.sweep.name == "none"
    assert effective_options(cfg.options, cfg.hardware) == {"seed": 42}


def test_seed_presets_carry_the_seed_users_numbers():
    low = composed("options=low_ctx").options
    assert (low.num_ctx, low.num_batch, low.num_predict, low.num_thread, low.num_gpu) == (512, 64, 256, 4, 1)
    base = composed("options=seed_baseline").options
    assert (base.num_ctx, base.num_batch, base.num_predict, base.temperature) == (2048, 128, 512, 0.7)


def test_hardware_recommendations_apply_only_where_options_are_unset():
    cpu = composed("hardware=cpu_only")
    assert effective_options(cpu.options, cpu.hardware) == {"num_gpu": 0, "seed": 42}
    chosen = composed("hardware=cpu_only", "options=low_ctx")
    assert effective_options(chosen.options, chosen.hardware)["num_gpu"] == 1


def test_config_ships_next_to_the_package_or_in_the_checkout():
    assert (config_dir() / "config.yaml").is_file()
    assert config_dir() in (
        Path(__file__).resolve().parent.parent / "conf",
        Path(__import__("sentinel_exp").__file__).resolve().parent / "conf",
    )


def test_run_names_say_what_was_measured_and_leave_out_presentation():
    from sentinel_exp.experiment import RunContext

    overrides = [
        "model.name=gemma3:1b",
        "options=low_ctx",
        "workload.concurrency=4",
        "progress=true",
        "tracking.uri=sqlite:///x.db",
        "hydra.run.dir=out",
    ]
    cfg = composed(*(o for o in overrides if not o.startswith("hydra.")))
    ctx = RunContext(
        output_dir=Path("."),
        overrides=overrides,
        choices={"model": "smollm2_135m", "options": "low_ctx", "workload": "default"},
    )
    assert ctx.run_name(cfg, "ollama") == "gemma3:1b-low_ctx-default@ollama workload.concurrency=4"
    named = composed("tracking.run_name=mine")
    assert ctx.run_name(named, "ollama") == "mine"
