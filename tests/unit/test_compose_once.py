"""The sweeper's loader composes each job's config once: kept from the batch's check, handed to
the launch, and forgotten when unclaimed (a launcher in other processes composes there)."""

from __future__ import annotations

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode

from hydra_plugins.sentinel_exp_sweeper.sentinel_sweeper import ComposeOnce
from sentinel_exp.cli.app import config_dir
from sentinel_exp.config.schema import register_configs


def _loader_and_master():
    register_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(config_dir())))
    return loader, loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)


def test_a_checked_job_config_is_handed_to_the_launch_once():
    loader, master = _loader_and_master()
    once = ComposeOnce(loader)
    once.check(master, ["workload.requests=2"])
    kept = once.load_sweep_config(master, ["workload.requests=2"])
    assert kept.workload.requests == 2 and once.kept == 0
    again = once.load_sweep_config(master, ["workload.requests=2"])  # composed anew: not kept twice
    assert again is not kept and again.workload.requests == 2


def test_configs_a_launch_left_unclaimed_are_forgotten_at_the_next_batch():
    loader, master = _loader_and_master()
    once = ComposeOnce(loader)
    for requests in (1, 2, 3):
        once.check(master, [f"workload.requests={requests}"])
    # Unclaimed, as when a launcher in other processes (joblib) composes there.
    assert once.kept == 3
    once.new_batch()
    once.check(master, ["workload.requests=4"])
    assert once.kept == 1
