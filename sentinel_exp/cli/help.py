"""`python -m sentinel_exp --help`: usage, the config groups, and every setting with its current
value and the one-line description written beside its field in config.py."""

from __future__ import annotations

from pathlib import Path

USAGE = """\
sentinel-exp: declarative latency experiments for locally served LLMs (Ollama API), logged to MLflow.

Usage:
  python -m sentinel_exp [group=choice ...] [key.path=value ...]       one run
  python -m sentinel_exp -m group=a,b key.path=x,y                      a sweep (every combination)
  python -m sentinel_exp --cfg job [overrides]                          print the composed config
  mlflow ui --backend-store-uri sqlite:///mlflow.db                     browse and compare runs

Examples:
  python -m sentinel_exp                                                embedded SmolLM2 on this machine
  python -m sentinel_exp model=qwen05 options=low_ctx                   against your Ollama
  python -m sentinel_exp -m model=qwen05,llama32_1b options=default,low_ctx
  python -m sentinel_exp server=simulated workload.requests=50          model-free check of the tool
"""

FOOTER = """\
Outputs: ./outputs/<date>/<time>/ (./multirun/ for sweeps) hold requests.jsonl, config.yaml and
summary.json; MLflow runs go to tracking.uri (default sqlite:///mlflow.db). See README.md."""


def wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def help_text(conf_dir: Path, overrides: list[str]) -> str:
    """The help page for the config composed with `overrides` (values shown are what would run)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sentinel_exp.config.schema import settings_help

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    lines = [USAGE, "== Config groups (group=choice) =="]
    for group in sorted(p for p in conf_dir.iterdir() if p.is_dir()):
        lines.append(f"{group.name}: {', '.join(sorted(f.stem for f in group.glob('*.yaml')))}")
    lines += ["", "== Settings (key.path=value; null = not set) =="]
    rows = [(path, _shown(OmegaConf.select(cfg, path)), doc) for path, doc in settings_help()]
    # Long values (the prompt list) get the description on the next line instead of widening all.
    width = min(44, max(len(f"{path}: {value}") for path, value, _ in rows))
    for path, value, doc in rows:
        setting = f"{path}: {value}"
        if len(setting) > width:
            lines += [f"  {setting}", f"  {'':<{width}}  {doc}".rstrip()]
        else:
            lines.append(f"  {setting:<{width}}  {doc}".rstrip())
    return "\n".join([*lines, "", FOOTER])


def _shown(value: object) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    text = "null" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
