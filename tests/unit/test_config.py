"""Every shipped group file validates against the schema; hardware recommendations merge under
options. (tests/integration/test_composition.py composes every choice through Hydra itself.)"""

import re
from pathlib import Path

import pytest
from support.compose import NotPlain, composed, plain_group_file, variant

from sentinel_exp.cli.app import config_dir
from sentinel_exp.config.schema import ExperimentConfig, register_configs, settings_help, typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.names import Api, ServerKind

register_configs()
GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir())


def test_the_contract_groups_exist():
    assert set(GROUPS) >= {"server", "model", "options", "hardware", "workload", "tracking", "sweep"}


CHOICES = [(g, p.stem) for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "choice"), CHOICES)
def test_each_group_file_validates_against_its_section(group, choice):
    try:
        plain_group_file(group, choice)
    except NotPlain:
        assert group == "sweep", f"{group}/{choice}.yaml needs Hydra to compose"  # the presets are global
        return
    assert isinstance(typed_config(variant(f"{group}={choice}")), ExperimentConfig)


def test_defaults_match_the_design():
    cfg = typed_config(composed())
    assert cfg.server.kind is ServerKind.auto and cfg.workload.api is Api.chat and cfg.model.name == "smollm2:135m"
    assert cfg.tracking.uri == "sqlite:///mlflow.db" and cfg.sweep.name == "none"
    assert cfg.effective_options() == {"seed": 42}


def test_seed_presets_carry_the_seed_users_numbers():
    low = variant("options=low_ctx").options
    assert (low.num_ctx, low.num_batch, low.num_predict, low.num_thread, low.num_gpu) == (512, 64, 256, 4, 1)
    base = variant("options=seed_baseline").options
    assert (base.num_ctx, base.num_batch, base.num_predict, base.temperature) == (2048, 128, 512, 0.7)


@pytest.mark.parametrize("preset", ["low_ctx", "seed_baseline"])
def test_each_number_of_a_seed_preset_names_where_in_the_seed_it_comes_from(preset):
    lines = (config_dir() / "options" / f"{preset}.yaml").read_text(encoding="utf-8").splitlines()
    values = [line for line in lines if line and not line.startswith("#")]
    assert len(values) >= 5
    for line in values:
        _, _, source = line.partition("#")
        assert any(where in source for where in ("hypothesis 3", "step 2", "not the seed's")), line


def test_hardware_recommendations_apply_only_where_options_are_unset():
    assert typed_config(variant("hardware=cpu_only")).effective_options() == {"num_gpu": 0, "seed": 42}
    assert typed_config(variant("hardware=cpu_only", "options=low_ctx")).effective_options()["num_gpu"] == 1


def test_config_ships_next_to_the_package_or_in_the_checkout():
    assert (config_dir() / "config.yaml").is_file()
    assert config_dir() in (
        Path(__file__).resolve().parents[2] / "conf",
        Path(__import__("sentinel_exp").__file__).resolve().parent / "conf",
    )


def test_run_names_lead_with_what_differs_and_leave_out_presentation():
    from sentinel_exp.run.context import RunContext

    overrides = [
        "model.name=gemma3:1b",
        "options=low_ctx",
        "workload.concurrency=4",
        "server=ollama",
        "server.url=http\\://127.0.0.1\\:11434",
        "progress=true",
        "plots=false",
        "tracking.uri=sqlite:///x.db",
        "hydra.run.dir=out",
    ]
    cfg = typed_config(variant(*(o for o in overrides if not o.startswith("hydra."))))
    ctx = RunContext(output_dir=Path("."), overrides=overrides, swept=frozenset({"workload.concurrency"}))
    # Swept first, Hydra's escaping undone, the server once (as @kind), no presentation settings.
    assert ctx.run_name(cfg, "ollama") == (
        "workload.concurrency=4 model.name=gemma3:1b options=low_ctx server.url=http://127.0.0.1:11434 @ollama"
    )
    assert RunContext(Path(".")).run_name(typed_config(composed()), "embedded") == "smollm2:135m @embedded"
    assert ctx.run_name(typed_config(variant("tracking.run_name=mine")), "ollama") == "mine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["workload.requests=0"], "workload.requests must be at least 1 (got 0)"),
        (["workload.rate=-1"], "workload.rate must be positive requests/s"),
        (["workload.keep_alive=forever"], "workload.keep_alive: invalid duration 'forever'"),
        (["server.keep_alive=soon"], "server.keep_alive: invalid default keep_alive 'soon'"),
        (["server.sim.tokens=0"], "server.sim.tokens must be at least 1 (got 0)"),
        (["server.sim.faults={0:http_500}"], "server.sim.faults: 0: http_500 should be <request number>"),
        (["server.models=5"], "server.models must be a mapping"),
        (["telemetry.interval_s=0"], "telemetry.interval_s must be positive (got 0.0)"),
        (["tracking.experiment=' '"], "tracking.experiment is empty"),
        (
            ["hardware.recommended_options={num_gpus:1}"],
            "hardware.recommended_options.num_gpus is not an Ollama option",
        ),
        (["server=openai", "workload.api=generate"], "workload.api=generate needs an Ollama server"),
        (["+workload.think=1"], "workload.think is not a known setting"),
        (["+server.api_key=sk-123"], "server.api_key is not a setting: an API key is read only from the environment"),
    ],
)
def test_each_section_reports_its_own_problems(overrides, message):
    with pytest.raises(ConfigError) as caught:
        typed_config(variant(*overrides))
    assert message in str(caught.value) and "sk-123" not in str(caught.value)


def test_every_setting_has_a_one_line_description_for_help():
    rows = settings_help()
    assert len(rows) > 60 and ("workload.requests", "Requests in the measured phase.") in rows
    assert [path for path, doc in rows if not doc] == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("options.num_ctx=-5", "options.num_ctx=-5 is not a context size in tokens: it takes 1 or more"),
        ("options.num_batch=0", "options.num_batch=0 is not a batch size in tokens: it takes 1 or more"),
        ("options.num_gpu=-2", "options.num_gpu=-2 is not a count of layers on the GPU (-1 = automatic)"),
        ("options.num_predict=0", "with no token to generate there is no first token to time"),
        ("options.num_predict=-3", "options.num_predict must be a number of tokens (1 or more), -1"),
        ("options.top_p=1.5", "options.top_p must be between 0 and 1 (got 1.5)"),
        ("options.mirostat=3", "options.mirostat must be 0 (off), 1 or 2 (got 3)"),
        ("hardware.recommended_options={num_thread:-1}", "hardware.recommended_options.num_thread=-1 is not"),
    ],
)
def test_an_option_value_that_means_nothing_is_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        typed_config(variant(override))


@pytest.mark.parametrize("value", ["options.num_predict=-1", "options.num_predict=-2", "options.num_thread=0"])
def test_the_special_option_values_pass(value):
    assert typed_config(variant(value)).effective_options()


@pytest.mark.parametrize("kind", ["simulated", "embedded"])
def test_a_url_for_a_bundled_server_is_refused_as_it_would_be_ignored(kind):
    with pytest.raises(ConfigError, match=f"server.url=http://127.0.0.1:1 is not used by server={kind}"):
        typed_config(variant(f"server={kind}", "server.url=http://127.0.0.1:1"))
    assert typed_config(variant("server=ollama", "server.url=http://127.0.0.1:1")).server.url
