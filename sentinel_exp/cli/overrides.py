"""Command-line overrides checked against the schema before Hydra composes anything.

Hydra rejects a mistyped key or value too, but with several lines of OmegaConf internals and a
hint (`+key=value`) that is wrong for this closed schema. Here each mistake becomes one line
naming the setting, what it accepts and, for a typo, the nearest valid name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import types
import typing
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sentinel_exp.config.schema import SECRET_SETTINGS, ExperimentConfig, SloConfig, slo_metric_problem
from sentinel_exp.urls import credentials_problem

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def command_line_overrides(argv: list[str]) -> list[str]:
    """The override arguments of a Hydra command line that this module can judge; none when
    the line changes where configs come from (other config dirs, search paths), is shell
    completion, or is not a valid Hydra line at all (Hydra then says so itself, once)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:  # --version, or a flag argparse rejects
        return []
    if args.shell_completion or args.config_dir or args.config_path or args.config_name:
        return []
    overrides = list(args.overrides)
    if any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        return []
    return overrides


def override_problems(overrides: list[str], conf_dir: Path) -> list[str]:
    """One line per override that names an unknown setting, group choice or wrong-typed value.

    Overrides Hydra cannot parse are left to Hydra, which reports the position of the error.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return []
    groups = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in conf_dir.iterdir() if p.is_dir()}
    problems = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.package is not None or override.is_delete():
            continue
        if key in SECRET_SETTINGS:
            problems.append(SECRET_SETTINGS[key])
        elif key == "tracking.uri" and (found := _credentials(_values(override))):
            # Refused here, before Hydra writes the overrides into the run folder's .hydra/.
            problems.append(found)
        elif key in groups:
            problems += _choice_problems(key, _values(override), groups[key])
        elif not (override.is_add() or override.is_force_add()):
            problems += _setting_problems(key, _values(override))
        elif override.is_add() and not _setting_problems(key, []):
            # Hydra refuses to add what exists, with a traceback-like message.
            problems.append(f"{key} is already a setting: write {key}=... without the +")
        # Other `+key=...` name settings the schema lacks: typed_config reports those.
    return problems


def _credentials(values: list[Any]) -> str | None:
    return next(filter(None, (credentials_problem(str(value), "tracking.uri") for value in values)), None)


def _values(override: Any) -> list[Any]:
    from hydra.core.override_parser.types import ChoiceSweep

    if not override.is_sweep_override():
        return [override.value()]
    value = override.value()
    return list(value.list) if isinstance(value, ChoiceSweep) else []  # ranges, globs: left to Hydra


def _choice_problems(group: str, values: Iterable[Any], available: list[str]) -> list[str]:
    problems = []
    for value in values:
        if isinstance(value, str) and value not in available:
            problems.append(
                f"{group}={value} is not a choice of {group} (available: {', '.join(available)})"
                f"{_did_you_mean(value, available, group + '=')}"
            )
    return problems


def _setting_problems(key: str, values: list[Any]) -> list[str]:
    schema: Any = ExperimentConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(schema)
        where = ".".join(parts[:depth])
        if part not in hints and schema is SloConfig and depth == len(parts) - 1:
            return _slo_target_problems(key, part, values)
        if part not in hints:
            name = f"{where}.{part}" if where else part
            known = [f"{where}.{k}" if where else k for k in hints]
            return [
                f"{name} is not a setting{_did_you_mean(name, known)}"
                + (f" (settings of {where}: {', '.join(hints)})" if where else "")
            ]
        field_type = _unwrap_optional(hints[part])
        if depth == len(parts) - 1:
            return _value_problems(key, schema, part, field_type, values)
        if not dataclasses.is_dataclass(field_type):
            return []  # inside a free-form mapping (server.models, sim.faults, ...)
        schema = field_type
    return []


def _slo_target_problems(key: str, metric: str, values: list[Any]) -> list[str]:
    """`slo.<metric>=<limit>`: a run-level target, for a metric whose better direction is known."""
    if problem := slo_metric_problem(metric):
        return [f"{key}: {problem}"]
    return [
        f"{key}={value!r} is not valid: {key} takes a number (the limit) or null"
        for value in values
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))
    ]


def _value_problems(key: str, schema: Any, leaf: str, field_type: Any, values: list[Any]) -> list[str]:
    if dataclasses.is_dataclass(field_type) or field_type is Any:
        return []
    node = OmegaConf.structured(schema)
    for value in values:
        try:
            node[leaf] = value
        except OmegaConfBaseException:
            expected = _TYPE_WORDS.get(field_type, "a list" if typing.get_origin(field_type) is list else "")
            if isinstance(field_type, type) and issubclass(field_type, Enum):
                expected = "one of " + ", ".join(member.value for member in field_type)
            nullable = " (or null)" if _is_optional(typing.get_type_hints(schema)[leaf]) else ""
            return [f"{key}={value!r} is not valid: {key} takes {expected or field_type}{nullable}"]
    return []


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _unwrap_optional(hint: Any) -> Any:
    if _is_optional(hint):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Any
    return hint


def _did_you_mean(word: str, candidates: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
