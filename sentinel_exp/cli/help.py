"""`python -m sentinel_exp --help`: usage, the companion commands, every group choice and sweep
preset on a line of its own, the presets named on the command line in full (a sweep's swept values
and job count), every setting with the value this run would use (marked where it differs from the
default) and the one-line description written beside its field in config/schema.py, and the exit
statuses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

USAGE = """\
sentinel-exp: declarative latency experiments for locally served LLMs (Ollama API), logged to MLflow.

Usage:
  python -m sentinel_exp [group=choice ...] [key.path=value ...]       one run
  python -m sentinel_exp -m group=a,b key.path=x,y                      a sweep (every combination)
  python -m sentinel_exp --cfg job [overrides]                          print the composed config
  python -m sentinel_exp --help [overrides]                             this page, for that run or sweep
  mlflow ui --backend-store-uri sqlite:///mlflow.db                     browse and compare runs

Companion commands (each with its own --help):
  python -m sentinel_exp.compare FOLDER | RUN_ID ...                    which change helps: runs compared
  python -m sentinel_exp.sync FOLDER ...                                upload run folders MLflow did not take
  python -m sentinel_exp.serve --engine simulated --port N              a bundled Ollama-compatible server

Examples:
  python -m sentinel_exp                                                embedded SmolLM2 on this machine
  python -m sentinel_exp model=qwen05 options=low_ctx                   against your Ollama
  python -m sentinel_exp -m model=qwen05,llama32_1b options=default,low_ctx
  python -m sentinel_exp server=simulated workload.requests=50          model-free check of the tool
"""

FOOTER = """\
Exit status: 0 the run finished; 2 a mistake in the configuration, the command line or the server
setup, found before any request (a sweep: some job could not run); 3 the run measured but gave up
(FAILED); 4 measured, but not in the MLflow store (python -m sentinel_exp.sync uploads it later);
130 / 143 stopped by Ctrl-C / SIGTERM.

Outputs: ./outputs/<date>/<time>/ (./multirun/ for sweeps) hold requests.jsonl, config.yaml and
summary.json; MLflow runs go to tracking.uri (default sqlite:///mlflow.db). See README.md."""

DESCRIPTION_CHARS = 100


def wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def help_text(conf_dir: Path, overrides: list[str]) -> str:
    """The help page for the run (or sweep) `overrides` make: the values shown are what would run."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [text for text, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]
    swept = [text for text, o in zip(overrides, parsed, strict=True) if o.is_sweep_override()]
    cfg = _compose(conf_dir, fixed)
    chosen = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items() if not str(k).startswith("hydra")}
    lines = [USAGE, "== Config groups (group=choice; * = this run's) =="]
    for group in sorted(p for p in conf_dir.iterdir() if p.is_dir()):
        lines += _group_lines(group, chosen.get(group.name))
    for override in OverridesParser.create().parse_overrides(fixed):
        if (conf_dir / override.key_or_group).is_dir() and isinstance(override.value(), str):
            lines += _preset_lines(conf_dir / override.key_or_group / f"{override.value()}.yaml")
    if swept or chosen.get("sweep", "none") != "none":
        lines += _sweep_lines(cfg, swept)
    lines += _settings_lines(cfg, _compose(conf_dir, []))
    return "\n".join([*lines, "", FOOTER])


def _compose(conf_dir: Path, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _group_lines(group: Path, chosen: str | None) -> list[str]:
    """The group's name, then one line per choice: marked when this run uses it, described (by its
    values where the choices' words are alike, as the ablation arms' are)."""
    choices = sorted(group.glob("*.yaml"))
    width = max(len(c.stem) for c in choices)
    described = [choice_description(c) for c in choices]
    lines = [f"{group.name}:"]
    for choice, text in zip(choices, described, strict=True):
        if described.count(text) > 1:
            text = _cut(_values(_load(choice)))
        mark = "*" if choice.stem == chosen else " "
        lines.append(f"  {mark} {choice.stem:<{width}}  {text}".rstrip())
    return lines


def _load(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def choice_description(path: Path) -> str:
    """A group choice in one line: its `description` (a sweep preset's with its job count), else
    the first sentence of the comment its file starts with, else its values."""
    data = _load(path)
    described = data.get("description")
    if path.parent.name == "sweep":
        jobs = preset_jobs(data)
        described = (data.get("sweep") or {}).get("description")
        counted = f" ({jobs} job{'s' if jobs != 1 else ''})" if jobs is not None else " (one run)"
        return _cut(f"{described or _first_sentence(path)}{counted}")
    return _cut(str(described or _first_sentence(path) or _values(data)))


def _first_sentence(path: Path) -> str:
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            comment.append(line.lstrip("#").strip())
    return " ".join(comment).split(". ")[0].rstrip(".")


def _values(data: Mapping[str, Any]) -> str:
    scalars = {k: v for k, v in data.items() if k != "defaults" and not isinstance(v, (dict, list))}
    return ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in scalars.items())


def _yaml_scalar(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _cut(text: str) -> str:
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 3].rstrip() + "..."


def preset_jobs(data: Mapping[str, Any]) -> int | None:
    """How many jobs a sweep preset's file runs by itself (None: a single run)."""
    sweeper = ((data.get("hydra") or {}).get("sweeper")) or {}
    if "n_trials" in sweeper:
        return int(sweeper["n_trials"])
    params = sweeper.get("params") or {}
    if not params:
        return None
    return math.prod(len(values) for values in swept_values([_override(k, v) for k, v in params.items()]).values())


def swept_values(overrides: list[str]) -> dict[str, list[str]]:
    """Each swept key's values, as Hydra's basic sweeper would run them (a key given twice: the last)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            values[override.key_or_group] = [str(v) for v in override.sweep_string_iterator()]
        else:
            values[override.key_or_group] = [str(override.value())]
    return values


def _override(key: str, value: object) -> str:
    return f"{key}={_yaml_scalar(value)}"


def _preset_lines(path: Path) -> list[str]:
    """A preset named on the command line, whole: its values and what its comments say of them."""
    if not path.is_file():
        return []
    body = [line for line in path.read_text(encoding="utf-8").splitlines() if "@package" not in line]
    title = f"== {path.parent.name}={path.stem} (conf/{path.parent.name}/{path.name}) =="
    return ["", title, *(f"  {line}".rstrip() for line in body)]


def _sweep_lines(cfg: Any, swept: list[str]) -> list[str]:
    """What the sweep varies, in the order its jobs run, and how many jobs it makes."""
    from sentinel_exp.sweep.order import InterleaveError, arrange

    sweeper = cfg.hydra.sweeper
    title = "== Sweep ==" if cfg.sweep.name == "none" else f"== Sweep {cfg.sweep.name}: {cfg.sweep.description} =="
    if "n_trials" in sweeper:
        params = [f"  {k}: {v}" for k, v in (sweeper.params or {}).items()]
        return ["", title, *params, f"  {sweeper.n_trials} jobs: trials the Optuna sweeper chooses among these"]
    params = [_override(k, v) for k, v in (sweeper.get("params") or {}).items()]
    try:
        ordered = arrange(params + swept, str(cfg.sweep.order))
    except InterleaveError as exc:
        return ["", title, f"  error: {exc}"]
    values = swept_values(ordered)
    jobs = math.prod(len(v) for v in values.values())
    lines = ["", title, *(f"  {key}: {', '.join(v)}" for key, v in values.items())]
    return [*lines, f"  {jobs} job{'s' if jobs != 1 else ''} (sweep.order={cfg.sweep.order})"]


def _settings_lines(cfg: Any, default: Any) -> list[str]:
    """Every setting with this run's value, `*` where it is not the default's (shown beside it)."""
    from omegaconf import OmegaConf

    from sentinel_exp.config.schema import settings_help

    lines = ["", "== Settings (key.path=value; null = not set; * = not the default) =="]
    rows = []
    for path, doc in settings_help():
        value, was = _shown(OmegaConf.select(cfg, path)), _shown(OmegaConf.select(default, path))
        rows.append((path, value, doc if value == was else f"{doc} [default: {was}]", value != was))
    # Long values (the prompt list) get the description on the next line instead of widening all.
    width = min(44, max(len(f"{path}: {value}") for path, value, _, _ in rows))
    for path, value, doc, changed in rows:
        mark, setting = "*" if changed else " ", f"{path}: {value}"
        if len(setting) > width:
            lines += [f"{mark} {setting}", f"  {'':<{width}}  {doc}".rstrip()]
        else:
            lines.append(f"{mark} {setting:<{width}}  {doc}".rstrip())
    return lines


def _shown(value: object) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    text = "null" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
