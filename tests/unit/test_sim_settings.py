"""The simulated server's one settings type: its checks, its generated flags and their round trip
through `python -m sentinel_exp.serve`'s parser, and the experiment config built on it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from omegaconf import OmegaConf

from sentinel_exp.config.schema import ExperimentConfig, SimConfig, typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.names import FaultKind, ServerKind
from sentinel_exp.serve.__main__ import build_parser
from sentinel_exp.serve.engines.simulated import SimulatedEngine
from sentinel_exp.serve.sim_settings import FAULTS, SimSettings

CUSTOM = SimSettings(
    load_ms=12.5,
    ttft_ms=0.1,
    itl_ms=3.0,
    prefill_ms_per_token=0.25,
    jitter_ms=1.5,
    seed=7,
    tokens=9,
    parallel=4,
    faults={3: FaultKind.HTTP_500, 5: "cut_stream"},
    gpu_fraction=0.5,
)


def sim_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    SimSettings.add_arguments(parser)
    return parser


@pytest.mark.parametrize("settings", [SimSettings(), CUSTOM, SimSettings(jitter_ms=0.0, faults={1: "stall"})])
def test_settings_survive_the_round_trip_through_their_flags(settings: SimSettings) -> None:
    assert SimSettings.from_args(sim_parser().parse_args(settings.to_args())) == settings
    args = build_parser().parse_args(["--engine", "simulated", *settings.to_args()])
    assert SimSettings.from_args(args) == settings


def test_to_args_writes_one_flag_per_field_and_one_per_fault() -> None:
    assert CUSTOM.to_args() == [
        "--load-ms=12.5",
        "--ttft-ms=0.1",
        "--itl-ms=3.0",
        "--prefill-ms-per-token=0.25",
        "--jitter-ms=1.5",
        "--seed=7",
        "--tokens=9",
        "--parallel=4",
        "--fault=3:http_500",
        "--fault=5:cut_stream",
        "--gpu-fraction=0.5",
        "--drift-pct=0.0",
        "--drift-period-s=120.0",
        "--spell-pct=0.0",
        "--spell-every-s=20.0",
        "--spell-s=2.0",
        "--noise-epoch=0.0",
    ]


def test_todays_flags_parse_as_before() -> None:
    argv = "--load-ms 0 --ttft-ms 20 --itl-ms 2 --prefill-ms-per-token 0.5 --jitter-ms 1 --seed 3 --tokens 5"
    argv += " --parallel 1 --fault 2:http_503 --fault 4:early_end"
    args = build_parser().parse_args(["--engine", "simulated", *argv.split()])
    assert SimSettings.from_args(args) == SimSettings(
        load_ms=0.0,
        ttft_ms=20.0,
        itl_ms=2.0,
        prefill_ms_per_token=0.5,
        jitter_ms=1.0,
        seed=3,
        tokens=5,
        parallel=1,
        faults={2: "http_503", 4: "early_end"},
    )


def test_unset_flags_take_the_fields_defaults() -> None:
    args = build_parser().parse_args(["--engine", "simulated"])
    assert SimSettings.from_args(args) == SimSettings()
    assert SimSettings() == SimSettings(300.0, 40.0, 5.0, 0.0, 0.0, 0, 32, 0, {})
    # Absent, not defaulted: the embedded engine tells "not given" from 0 (its own default is 1 slot).
    assert not hasattr(args, "parallel")


def test_the_help_is_each_fields_doc_and_default() -> None:
    text = " ".join(build_parser().format_help().split())  # argparse wraps lines
    for f in dataclasses.fields(SimSettings):
        doc = " ".join(f.metadata["doc"].split())
        flag = "--fault N:KIND" if f.name == "faults" else f"--{f.name.replace('_', '-')} {f.name.upper()}"
        assert f"{flag} {doc}" in text
        if f.name != "faults":
            assert f"{flag} {doc} (default: {f.default})" in text
    assert "--tokens TOKENS answer length in words when the request sets no num_predict (default: 32)" in text
    assert ", ".join(FAULTS) in text


@pytest.mark.parametrize("bad", ["3", "x:http_500", ":stall"])
def test_a_fault_flag_needs_a_request_number_and_a_kind(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        sim_parser().parse_args(["--fault", bad])
    assert exited.value.code == 2
    assert f"argument --fault: expected N:KIND, got '{bad}'" in capsys.readouterr().err


def test_problems_name_each_setting_out_of_range() -> None:
    bad = SimSettings(load_ms=-1, itl_ms=-0.5, tokens=0, parallel=-2, faults={0: "http_500", 2: "boom"})
    kinds = ", ".join(FAULTS)
    assert bad.problems("server.sim.") == [
        "server.sim.load_ms must be 0 or more (got -1)",
        "server.sim.itl_ms must be 0 or more (got -0.5)",
        "server.sim.tokens must be at least 1 (got 0)",
        "server.sim.parallel must be 0 (unlimited) or more (got -2)",
        f"server.sim.faults: 0: http_500 should be <request number>: one of {kinds}",
        f"server.sim.faults: 2: boom should be <request number>: one of {kinds}",
    ]
    assert bad.problems()[2] == "tokens must be at least 1 (got 0)"
    assert SimSettings().problems() == [] and CUSTOM.problems() == []


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_gpu_fraction_is_a_fraction(fraction: float) -> None:
    assert SimSettings(gpu_fraction=fraction).problems("server.sim.") == [
        f"server.sim.gpu_fraction must be between 0 and 1 (got {fraction})"
    ]
    assert SimSettings(gpu_fraction=1.0).problems() == SimSettings(gpu_fraction=0.0).problems() == []


def test_the_simulated_engine_reports_its_scripted_gpu_fraction_as_size_vram() -> None:
    size, size_vram = SimulatedEngine(SimSettings(gpu_fraction=0.25)).loaded_size(None)
    assert size_vram == size // 4 and size > 0
    assert SimulatedEngine(SimSettings()).loaded_size(None)[1] == 0


def test_the_engine_refuses_settings_with_problems() -> None:
    with pytest.raises(ValueError, match=r"^tokens must be at least 1 \(got 0\); faults: 1: boom should be"):
        SimulatedEngine(SimSettings(tokens=0, faults={1: "boom"}))
    assert SimulatedEngine(CUSTOM).name == ServerKind.simulated


def test_the_config_node_is_the_same_type_with_the_same_defaults() -> None:
    assert issubclass(SimConfig, SimSettings)
    node = OmegaConf.structured(ExperimentConfig).server.sim
    assert SimSettings.from_values(node) == SimSettings()
    node.faults = {3: "http_500"}  # what `server.sim.faults={3:http_500}` sets
    node.tokens = 10
    assert SimSettings.from_values(node) == SimSettings(tokens=10, faults={3: "http_500"})
    flags = SimSettings.from_values(node).to_args()
    at = flags.index("--gpu-fraction=0.0")
    assert flags[at - 2 : at + 1] == ["--parallel=0", "--fault=3:http_500", "--gpu-fraction=0.0"]


def test_config_problems_report_the_sim_settings_with_their_config_path() -> None:
    cfg = OmegaConf.structured(ExperimentConfig)
    cfg.model.name = "m"
    cfg.server.sim.tokens = 0
    cfg.server.sim.jitter_ms = -1.0
    cfg.server.sim.faults = [3]
    with pytest.raises(ConfigError) as caught:
        typed_config(cfg)
    assert str(caught.value) == (
        "invalid configuration: server.sim.jitter_ms must be 0 or more (got -1.0); "
        "server.sim.tokens must be at least 1 (got 0); "
        "server.sim.faults must be a mapping like {3: http_500} (got [3])."
    )


def test_machine_noise_is_a_seeded_function_of_the_wall_clock() -> None:
    import numpy as np

    from sentinel_exp.serve.sim_settings import machine_slowdown

    quiet = SimSettings()
    assert machine_slowdown(quiet, 1_800_000_000.0) == 1.0  # no noise unless asked for
    noisy = SimSettings(drift_pct=20.0, drift_period_s=60.0, spell_pct=50.0, spell_every_s=10.0, spell_s=1.0, seed=3)
    times = 1_800_000_000.0 + np.arange(0.0, 3600.0, 0.05)
    factors = np.array([machine_slowdown(noisy, t) for t in times])
    # Two servers of one study (same settings, same clock) see the same machine; another seed another one.
    assert [machine_slowdown(noisy, t) for t in times[:50]] == factors[:50].tolist()
    other = [machine_slowdown(SimSettings(drift_pct=20.0, spell_pct=50.0, seed=4), t) for t in times[:2000]]
    assert other != factors[:2000].tolist()
    drift_only = np.array(
        [machine_slowdown(SimSettings(drift_pct=20.0, drift_period_s=60.0, seed=3), t) for t in times]
    )
    assert drift_only.min() >= 0.8 - 1e-9 and drift_only.max() <= 1.2 + 1e-9
    assert drift_only.max() - drift_only.min() > 0.2  # it does wander
    # A spell is 1 s in each 5 s slot with chance 1/2: a tenth of the time, 1.5 times slower.
    in_spell = np.isclose(factors / drift_only, 1.5)
    assert 0.07 < in_spell.mean() < 0.13
    assert np.isclose(factors / drift_only, 1.0)[~in_spell].all()


def test_machine_noise_settings_are_checked() -> None:
    found = SimSettings(drift_pct=-1.0, spell_pct=-2.0, spell_s=0.0).problems("server.sim.")
    assert "server.sim.drift_pct must be 0 or more (got -1.0)" in found
    assert "server.sim.spell_pct must be 0 or more (got -2.0)" in found
    assert "server.sim.spell_s must be positive seconds (got 0.0)" in found
