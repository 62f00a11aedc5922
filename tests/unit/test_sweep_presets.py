"""The sweep presets (conf/sweep/), the ablation arms (conf/ablation/), the order of a sweep's
jobs (sentinel_exp/sweep/order.py) and what makes runs repeats of one configuration.
(tests/integration/test_composition.py composes each preset through Hydra itself.)"""

import copy

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from support.compose import composed, variant

from sentinel_exp.cli.app import config_dir
from sentinel_exp.config.schema import register_configs, typed_config
from sentinel_exp.store.tracking import config_hash
from sentinel_exp.sweep.order import InterleaveError, arrange

register_configs()


def jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for these overrides, in launch order."""
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]


def preset_params(name: str) -> list[str]:
    params = OmegaConf.load(config_dir() / "sweep" / f"{name}.yaml").hydra.sweeper.params
    return [f"{key}={value}" for key, value in params.items()]


def test_models_is_the_seeds_plan():
    assert [job[0] for job in jobs(preset_params("models"))] == [
        "model=qwen05",
        "model=tinyllama",
        "model=phi3_mini_q4",
        "model=llama32_1b",
    ]
    for job in jobs(preset_params("models")):
        assert typed_config(variant(*job)).model.name


def test_options_grid_is_three_contexts_by_three_batches():
    grid = []
    for job in jobs(preset_params("options_grid")):
        options = typed_config(variant(*job)).options
        grid.append((options.num_ctx, options.num_batch))
    assert grid == [(c, b) for c in (512, 1024, 2048) for b in (64, 128, 512)]


def test_repeat3_runs_each_configuration_three_times_one_after_another():
    args = ["options=default,low_ctx"]
    assert OmegaConf.load(config_dir() / "sweep" / "repeat3.yaml").sweep.order == "sequential"
    ordered = jobs(arrange(preset_params("repeat3") + args, "sequential"))
    assert ordered == [[f"options={o}", f"repeat={r}"] for o in ("default", "low_ctx") for r in range(3)]
    # An interleaved study measures each configuration once, in rounds: repeats have no place there.
    with pytest.raises(InterleaveError, match="cannot set repeat as well"):
        arrange(preset_params("repeat3") + args, "interleaved")


def test_the_default_order_is_the_interleaved_study():
    assert typed_config(variant()).sweep.order == "interleaved"
    assert typed_config(variant("sweep.order=sequential")).sweep.order == "sequential"


@pytest.mark.parametrize(
    ("overrides", "order", "expected"),
    [
        (["a=1,2"], "sequential", ["a=1,2"]),
        (["repeat=range(0,3)", "a=1,2"], "sequential", ["a=1,2", "repeat=range(0,3)"]),
        (["repeat=range(0,3)", "a=1,2", "repeat=0,1"], "sequential", ["a=1,2", "repeat=0,1"]),  # the last wins
        (["a=1,2", "b=x"], "interleaved", ["a=1,2", "b=x"]),
    ],
)
def test_arrange_puts_the_repeat_where_the_order_wants_it(overrides, order, expected):
    assert arrange(overrides, order) == expected


def test_the_aa_preset_is_one_configuration_as_two_arms():
    assert list(jobs(preset_params("aa"))) == [["arm=A"], ["arm=B"]]
    a, b = (typed_config(variant(f"arm={arm}")) for arm in "AB")
    assert config_hash(a.as_dict()) == config_hash(b.as_dict())  # one configuration, measured twice
    assert OmegaConf.load(config_dir() / "sweep" / "aa.yaml").force is True


ABLATION_ARMS = ["baseline", "num_ctx", "num_batch", "num_predict", "num_thread", "num_gpu", "all"]


def test_proposal_ablation_changes_one_setting_of_the_proposal_at_a_time():
    assert [job[0] for job in jobs(preset_params("proposal_ablation"))] == [f"ablation={a}" for a in ABLATION_ARMS]
    base = typed_config(variant("options=seed_baseline")).effective_options()
    proposal = typed_config(variant("options=low_ctx")).effective_options()
    changes = {k for k in proposal.keys() | base.keys() if proposal.get(k) != base.get(k)}
    assert changes == {"num_ctx", "num_batch", "num_predict", "num_thread", "num_gpu"}
    for arm in ABLATION_ARMS:
        options = typed_config(variant(f"ablation={arm}", base=("sweep=proposal_ablation",))).effective_options()
        changed = {k for k in options.keys() | base.keys() if options.get(k) != base.get(k)}
        expected = {"baseline": set(), "all": changes}.get(arm, {arm})
        assert changed == expected, arm
        assert all(options[k] == proposal[k] for k in changed)


def test_repeats_and_judgements_are_one_configuration_and_options_are_not():
    def digest(*overrides):
        cfg = composed(*overrides) if any(o.startswith("sweep=") for o in overrides) else variant(*overrides)
        return config_hash(typed_config(cfg).as_dict())

    base = digest()
    for same in (
        ["repeat=2"],
        ["force=true"],
        ["slo.ttft_ms_p50=300", "slo.request.ttft_ms=50"],
        ["sweep=repeat3"],
        ["tracking.experiment=other"],
    ):
        assert digest(*same) == base, same
    assert digest("options=low_ctx") != base and digest("workload.requests=7") != base


def test_the_digest_of_a_file_a_setting_names_is_part_of_the_identity():
    resolved = typed_config(variant("workload.prompts_file=prompts/questions.txt")).as_dict()
    one, other = {"workload.prompts_file": "0" * 16}, {"workload.prompts_file": "1" * 16}
    assert config_hash(resolved, one) != config_hash(resolved, other)
    assert config_hash(resolved, one) == config_hash(resolved, dict(one))
    assert config_hash(resolved, {}) == config_hash(resolved)  # no file named: the identity as before


def test_settings_added_later_keep_the_identity_of_configurations_measured_before_them():
    from sentinel_exp.store.tracking import ADDED_SETTINGS

    now = typed_config(variant("server=simulated")).as_dict()
    before = copy.deepcopy(now)  # the same configuration as logged before these settings existed
    for path, former in ADDED_SETTINGS.items():
        *parents, leaf = path.split(".")
        node = before
        for key in parents:
            node = node[key]
        assert node[leaf] == former, f"{path}: its default is not the former behaviour"
        del node[leaf]
    assert config_hash(now) == config_hash(before)
    assert digest_of("workload.cold_start=true") != config_hash(typed_config(variant()).as_dict())
    assert digest_of("workload.think_time_s=1") != config_hash(typed_config(variant()).as_dict())


def digest_of(*overrides: str) -> str:
    return config_hash(typed_config(variant(*overrides)).as_dict())
