"""Command-line overrides are checked against the schema and the config groups before Hydra."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sentinel_exp.cli.app import config_dir
from sentinel_exp.cli.overrides import command_line_overrides, override_problems

REPO = Path(__file__).resolve().parents[2]
# The README and the docs site's pages; the configuration reference is generated (its choice
# descriptions quote commands inside sentences).
DOCUMENTS = [
    REPO / "README.md",
    *(p for p in sorted((REPO / "docs").rglob("*.md")) if p != REPO / "docs" / "reference" / "configuration.md"),
]


def problems(*args: str) -> list[str]:
    return override_problems(command_line_overrides(list(args)), config_dir())


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_in_the_docs_passes_the_check(document: Path) -> None:
    # A command continued over lines (a trailing backslash) is checked whole.
    text = document.read_text(encoding="utf-8").replace("\\\n", " ")
    for command in re.findall(r"python -m sentinel_exp(?![.\w])([^\n`#]*)", text):
        assert problems(*shlex.split(command)) == [], f"{document.name}: {command}"


def test_the_readme_and_the_guides_show_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(re.findall(r"python -m sentinel_exp(?![.\w])", readme)) >= 5


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "model=qwen05,llama32_1b", "options=default,low_ctx"],
        ["server.models={mysmol\\:q4:/models/x.gguf}", "server.sim.faults={3:http_500}"],
        ["options.num_keep=8", "~options.seed", "hydra.run.dir=somewhere", "--cfg", "job"],
        ["workload.rate=null", "workload.keep_alive=5m", "options.stop=[a,b]", "workload.requests=range(1,4)"],
        ["hardware.recommended_options.num_gpu=0", "model.name=qwen2.5:0.5b", "progress=true"],
    ],
)
def test_valid_command_lines_pass(args: list[str]) -> None:
    assert problems(*args) == []


def test_a_mistyped_setting_names_the_nearest_one_and_its_siblings() -> None:
    [message] = problems("workload.concurency=4")
    assert message.startswith("workload.concurency is not a setting; did you mean workload.concurrency?")
    assert "(settings of workload: api, requests, warmup, concurrency," in message
    assert problems("optoins.num_ctx=512") == ["optoins is not a setting; did you mean options?"]


def test_every_bad_choice_of_a_sweep_is_named() -> None:
    assert problems("-m", "model=qwen05,lama32_1b,nope") == [
        "model=lama32_1b is not a choice of model (available: llama32_1b, phi3_mini_q4, qwen05, smollm2_135m, "
        "tinyllama); did you mean model=llama32_1b?",
        "model=nope is not a choice of model (available: llama32_1b, phi3_mini_q4, qwen05, smollm2_135m, tinyllama)",
    ]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("options.num_ctx=big", "options.num_ctx='big' is not valid: options.num_ctx takes an integer (or null)"),
        (
            "options.use_mmap=maybe",
            "options.use_mmap='maybe' is not valid: options.use_mmap takes true or false (or null)",
        ),
        (
            "telemetry.interval_s=often",
            "telemetry.interval_s='often' is not valid: telemetry.interval_s takes a number",
        ),
        ("workload.prompts=hello", "workload.prompts='hello' is not valid: workload.prompts takes a list"),
    ],
)
def test_a_wrong_typed_value_says_what_the_setting_takes(arg: str, expected: str) -> None:
    assert problems(arg) == [expected]


def test_a_line_hydra_cannot_parse_is_left_to_hydra() -> None:
    assert problems("model=[unclosed") == []


@pytest.mark.parametrize(
    "args",
    [
        ["-sc", "install=bash"],  # shell completion: its words are not overrides
        ["-cd", "more_configs", "model=mine"],  # other config dirs may add choices
        ["--config-name", "other", "anything=1"],
        ["model=mine", "hydra.searchpath=[file://more_configs]"],
        ["--version"],
        ["--bogus-flag"],  # for Hydra to answer, once
    ],
)
def test_lines_that_change_where_configs_come_from_are_left_to_hydra(args: list[str]) -> None:
    assert command_line_overrides(args) == []


def test_every_ollama_option_is_a_setting_and_plus_is_refused_for_it() -> None:
    from sentinel_exp.config.schema import OptionsConfig
    from sentinel_exp.serve.wire import OPTION_TYPES

    assert set(OptionsConfig.__dataclass_fields__) == set(OPTION_TYPES)
    assert problems("options.num_keep=8", "options.mirostat=2") == []
    assert problems("+options.num_keep=8") == [
        "options.num_keep is already a setting: write options.num_keep=... without the +"
    ]


def test_an_enum_setting_lists_its_values() -> None:
    assert problems("workload.api=grpc") == [
        "workload.api='grpc' is not valid: workload.api takes one of chat, generate, openai"
    ]


@pytest.mark.parametrize("arg", ["server.api_key=sk-secret", "+server.api_key=sk-secret", "server.api_key=${oc.env:K}"])
def test_an_api_key_on_the_command_line_is_refused_and_the_variable_named(arg: str) -> None:
    [message] = problems(arg)
    assert message.startswith("server.api_key is not a setting: an API key is read only from the environment")
    assert "server.api_key_env (default OPENAI_API_KEY)" in message and "sk-secret" not in message
