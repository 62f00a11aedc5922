"""Hydra's compose API, as the CLI composes, with each distinct composition done once per session.

A composition costs about 0.3 s of CPU (Hydra merges its own config too), the bulk of the unit
level's time; several test files ask for the same ones.
"""

from __future__ import annotations

import copy
import functools

from omegaconf import DictConfig

from sentinel_exp.app import config_dir
from sentinel_exp.config import register_configs


def composed(*overrides: str, hydra: bool = False) -> DictConfig:
    """The composed config, with the hydra node if `hydra`; a copy, so a test may change it."""
    return copy.deepcopy(_composed(overrides, hydra))


@functools.cache
def _composed(overrides: tuple[str, ...], hydra: bool) -> DictConfig:
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)
