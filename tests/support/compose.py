"""Hydra's compose API, as the CLI composes, and a quick equivalent for plain overrides.

A Hydra composition costs about 0.4 s of CPU (Hydra builds its own config and defaults tree
each time), which would make up most of the unit level's time. `composed` does each distinct
composition once per session; `variant` applies plain overrides (values, and group files that
have no defaults list of their own) to the default composition in a few milliseconds, the way
Hydra applies them. tests/integration/test_composition.py checks that the two agree for every
shipped choice.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from sentinel_exp.cli.app import config_dir
from sentinel_exp.config.schema import ExperimentConfig, register_configs


def composed(*overrides: str, hydra: bool = False) -> DictConfig:
    """The composed config, with the hydra node if `hydra`; a copy, so a test may change it."""
    return copy.deepcopy(_composed(overrides, hydra))


@functools.cache
def _composed(overrides: tuple[str, ...], hydra: bool) -> DictConfig:
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


class NotPlain(ValueError):
    """An override `variant` cannot apply without Hydra: use `composed`."""


def variant(*overrides: str, base: tuple[str, ...] = ()) -> DictConfig:
    """What `composed(*base, *overrides)` gives, for plain `overrides`, without composing again."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = composed(*base)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key, value = override.key_or_group, override.value()
        if "." not in key and (config_dir() / key).is_dir():
            _swap_group(cfg, key, str(value))
        elif override.is_add() or override.is_force_add():
            with open_dict(cfg):
                OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        else:
            OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def plain_group_file(group: str, choice: str) -> tuple[str, DictConfig]:
    """The package a group file merges into and its content, with a defaults list that only
    names files of the same group (`- default`, `- _self_`) resolved; NotPlain otherwise."""
    path: Path = config_dir() / group / f"{choice}.yaml"
    package = group
    for line in path.read_text().splitlines():
        if line.startswith("# @package "):
            package = line.removeprefix("# @package ").strip()
    node = OmegaConf.load(path)
    if package == "_global_":
        raise NotPlain(f"{group}/{choice}.yaml is in the global package")
    defaults = node.pop("defaults", ["_self_"])
    if not all(isinstance(name, str) for name in defaults):
        raise NotPlain(f"{group}/{choice}.yaml has group overrides in its defaults list")
    parts = [node if name == "_self_" else plain_group_file(group, name)[1] for name in defaults]
    merged = OmegaConf.merge(*parts) if parts else OmegaConf.create()
    assert isinstance(merged, DictConfig)
    return package, merged


@functools.cache
def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def _swap_group(cfg: DictConfig, group: str, choice: str) -> None:
    package, node = plain_group_file(group, choice)
    if package == group:
        # The group's node is the schema's default with the chosen file merged over it.
        cfg[group] = OmegaConf.merge(_schema()[group], node)
    else:
        OmegaConf.update(cfg, package, node, merge=True)
