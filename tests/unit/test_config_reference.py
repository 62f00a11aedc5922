"""The configuration reference (docs/reference/configuration.md) is generated from conf/ and the
schema's field docs: the committed page must be what the generator writes today."""

from __future__ import annotations

import functools
import re

from sentinel_exp.config.reference import COMMAND, conf_dir, reference
from sentinel_exp.config.schema import settings_help

PAGE = conf_dir().parent / "docs" / "reference" / "configuration.md"


@functools.cache
def generated() -> str:
    return reference(conf_dir())


def test_the_committed_reference_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == generated(), f"{PAGE} is stale: run `{COMMAND}`"


def test_every_setting_is_listed_once_with_its_description() -> None:
    settings = settings_help()
    assert len(settings) > 90
    for path, doc in settings:
        rows = re.findall(rf"^\| `{re.escape(path)}` \| `(.*?)` \| (.*) \|$", generated(), flags=re.M)
        assert len(rows) == 1, path
        assert rows[0][1] == doc.replace("|", "\\|"), path


def test_defaults_are_what_a_run_without_overrides_uses() -> None:
    # Group defaults (model=smollm2_135m, workload=default) and schema defaults alike.
    for path, shown in [
        ("model.name", "smollm2:135m"),
        ("workload.requests", "20"),
        ("workload.rate", "null"),
        ("server.sim.ttft_ms", "40.0"),
        ("telemetry.enabled", "true"),
        ("tracking.uri", "sqlite:///mlflow.db"),
        ("lint", "warn"),
    ]:
        assert f"| `{path}` | `{shown}` |" in generated(), path


def test_every_choice_of_every_group_is_listed_with_what_it_sets() -> None:
    groups = sorted(p for p in conf_dir().iterdir() if p.is_dir())
    assert {g.name for g in groups} >= {"server", "model", "options", "workload", "sweep"}
    for group in groups:
        section = generated().split(f"\n### {group.name} choices\n", 1)[1].split("\n### ", 1)[0]
        listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
        assert listed == sorted(f.stem for f in group.glob("*.yaml")), group.name
    assert "| `qwen05` |  | `model.name=qwen2.5:0.5b`, " in generated()
    assert "`hydra.sweeper.params.workload.keep_alive=null,-1`" in generated()
    # The @package of an ablation file puts its keys under options.
    assert re.search(r"^\| `num_ctx` \| .* \| `options\.num_ctx=512` \|$", generated(), flags=re.M)
