"""Typed schema of the experiment config.

Hydra merges the YAML groups under conf/ onto these dataclasses, so a typo in a key or a
value of the wrong type is rejected while composing, before any request is sent.
Field names of `options` are Ollama option names, unchanged (DESIGN.md section 2).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from sentinel_exp.serve.engines.simulated import FAULTS, SimSettings

SERVER_KINDS = ("auto", "ollama", "embedded", "simulated", "openai")
WORKLOAD_APIS = ("chat", "generate", "openai")


@dataclass
class SimConfig:
    """Latency model of the simulated server (milliseconds)."""

    # Defaults are the server's own, so the runner and `python -m sentinel_exp.serve` agree.
    load_ms: float = SimSettings.load_ms
    ttft_ms: float = SimSettings.ttft_ms
    itl_ms: float = SimSettings.itl_ms
    prefill_ms_per_token: float = SimSettings.prefill_ms_per_token
    jitter_ms: float = SimSettings.jitter_ms
    seed: int = SimSettings.seed
    # Words per response when the request sets no num_predict.
    tokens: int = SimSettings.tokens
    # Concurrent generations; 0 = unlimited (Ollama itself defaults to one slot).
    parallel: int = 0
    # Scripted faults: generation request number (1-based, warmup included) -> fault kind.
    # Typed Any (checked in config_problems) so that `server.sim.faults={3:http_500}` on the
    # command line replaces the value; a typed dict would reject the new keys as "not in struct".
    faults: Any = None


@dataclass
class ServerConfig:
    kind: str = "auto"
    # Base URL of an external server; null = resolve (OLLAMA_HOST for ollama, a free port for
    # the servers that sentinel-exp starts itself).
    url: str | None = None
    startup_timeout_s: float = 60.0
    # Extra GGUF files the embedded server can serve: {ollama_tag: path}.
    models: Any = None  # Dict[str, str]; Any for the same reason as SimConfig.faults
    # Process to watch for server CPU/RSS when the server is not ours (e.g. Ollama).
    pid: int | None = None
    api_key: str | None = None
    # Default keep_alive of the bundled servers (embedded, simulated), for requests that send
    # none: what OLLAMA_KEEP_ALIVE is to Ollama. A Go duration or seconds; null = Ollama's 5m.
    keep_alive: Any | None = None
    sim: SimConfig = field(default_factory=SimConfig)


@dataclass
class ModelConfig:
    # Ollama tag, e.g. "qwen2.5:0.5b".
    name: str = MISSING
    description: str | None = None


@dataclass
class OptionsConfig:
    """Ollama `options`; null means "not sent", so the server's default applies."""

    num_ctx: int | None = None
    num_batch: int | None = None
    num_predict: int | None = None
    num_thread: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    use_mmap: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None


@dataclass
class HardwareConfig:
    name: str = "auto"
    # null = no expectation; false = expect no GPU (cpu_only).
    expect_gpu: bool | None = None
    gpu_name_pattern: str | None = None
    min_vram_mb: int | None = None
    # Options applied where the options group leaves them null.
    recommended_options: Any = None  # Dict[str, Any]; see SimConfig.faults


@dataclass
class WorkloadConfig:
    api: str = "chat"
    requests: int = 20
    warmup: int = 2
    concurrency: int = 1
    # Requests per second (Poisson arrivals); null = closed loop.
    rate: float | None = None
    prompts: list[str] = field(default_factory=lambda: ["Why is the sky blue? Answer briefly."])
    system: str | None = None
    # Ollama keep_alive: seconds (number) or Go duration ("5m", "0", "-1"); null = not sent.
    keep_alive: Any | None = None
    timeout_s: float = 120.0
    # A request whose server load_duration exceeds this counts as a cold start.
    cold_load_ms: float = 50.0
    seed: int = 0


@dataclass
class TelemetryConfig:
    enabled: bool = True
    interval_s: float = 0.1
    gpu: bool = True
    # Write the raw samples as MLflow step metrics (batched).
    log_series: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "sentinel-exp"
    # null = built from the config group choices.
    run_name: str | None = None


@dataclass
class SweepConfig:
    name: str = "none"
    description: str | None = None
    # The metric each job returns to the sweeper (an optimizer such as Optuna's seeks it).
    objective: str = "ttft_ms_p50"
    # minimize | maximize: a job without the metric returns +inf or -inf, the worst either way.
    direction: str = "minimize"


@dataclass
class ExperimentConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    options: OptionsConfig = field(default_factory=OptionsConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Print progress bars; null = only when attached to a terminal and not in CI.
    progress: bool | None = None


def register_configs() -> None:
    ConfigStore.instance().store(name="experiment_schema", node=ExperimentConfig)


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys added with `+key=value` that the schema does not know (Hydra lets `+` add them)."""
    hints = typing.get_type_hints(schema)
    problems = []
    for key in node:
        if key not in hints:
            if schema is not OptionsConfig:  # options are checked against Ollama's names
                problems.append(f"{prefix}{key} is not a known setting")
        elif dataclasses.is_dataclass(hints[key]) and OmegaConf.is_dict(node[key]):
            problems += unknown_keys(node[key], hints[key], f"{prefix}{key}.")
    return problems


def effective_options(options: Any, hardware: Any) -> dict[str, Any]:
    """Options sent to the server: the hardware profile's recommendations, overridden by every
    option the options group sets (null = not sent)."""
    merged = dict(OmegaConf.to_container(hardware.recommended_options)) if hardware.recommended_options else {}
    chosen = OmegaConf.to_container(options) if OmegaConf.is_config(options) else dict(options)
    merged.update({k: v for k, v in chosen.items() if v is not None})
    return merged


def config_problems(cfg: Any) -> list[str]:
    """Semantic checks the type schema cannot express; empty when the config is usable."""
    from sentinel_exp.names import Direction
    from sentinel_exp.serve.keepalive import KeepAliveError, keep_alive_seconds, server_default_seconds
    from sentinel_exp.serve.wire import OPTION_TYPES, OptionTypeError, validate_options

    problems: list[str] = []
    w = cfg.workload
    if cfg.server.kind not in SERVER_KINDS:
        problems.append(f"server.kind={cfg.server.kind!r} is not one of {', '.join(SERVER_KINDS)}")
    problems += unknown_keys(cfg, ExperimentConfig)
    for name in cfg.options:
        if name not in OPTION_TYPES:
            problems.append(f"options.{name} is not an Ollama option")
    if w.api not in WORKLOAD_APIS:
        problems.append(f"workload.api={w.api!r} is not one of {', '.join(WORKLOAD_APIS)}")
    if cfg.server.kind == "openai" and w.api == "generate":
        problems.append("workload.api=generate needs an Ollama server; server=openai speaks /v1/chat/completions")
    if w.requests < 1:
        problems.append(f"workload.requests must be at least 1 (got {w.requests})")
    if w.warmup < 0:
        problems.append(f"workload.warmup must be 0 or more (got {w.warmup})")
    if w.concurrency < 1:
        problems.append(f"workload.concurrency must be at least 1 (got {w.concurrency})")
    if w.rate is not None and w.rate <= 0:
        problems.append(f"workload.rate must be positive requests/s, or null for a closed loop (got {w.rate})")
    if w.timeout_s <= 0:
        problems.append(f"workload.timeout_s must be positive (got {w.timeout_s})")
    if not w.prompts or any(not isinstance(p, str) or not p.strip() for p in w.prompts):
        problems.append("workload.prompts must be a non-empty list of non-empty strings")
    try:
        keep_alive_seconds(w.keep_alive)
    except KeepAliveError as exc:
        problems.append(f"workload.keep_alive: {exc}")
    try:
        server_default_seconds(None if cfg.server.keep_alive is None else str(cfg.server.keep_alive))
    except KeepAliveError as exc:
        problems.append(f"server.keep_alive: {exc}")
    if not cfg.model.name or not str(cfg.model.name).strip():
        problems.append("model.name is empty")
    if not str(cfg.tracking.experiment).strip():
        problems.append("tracking.experiment is empty")
    if not str(cfg.sweep.objective).strip():
        problems.append("sweep.objective is empty (a metric name, e.g. ttft_ms_p50)")
    directions = [d.value for d in Direction]
    if cfg.sweep.direction not in directions:
        problems.append(f"sweep.direction={cfg.sweep.direction!r} is not one of {', '.join(directions)}")
    sim = cfg.server.sim
    if sim.tokens < 1:
        problems.append(f"server.sim.tokens must be at least 1 (got {sim.tokens})")
    if sim.parallel < 0:
        problems.append(f"server.sim.parallel must be 0 (unlimited) or more (got {sim.parallel})")
    if cfg.telemetry.interval_s <= 0:
        problems.append(f"telemetry.interval_s must be positive (got {cfg.telemetry.interval_s})")
    for path, value in (
        ("server.sim.faults", cfg.server.sim.faults),
        ("server.models", cfg.server.models),
        ("hardware.recommended_options", cfg.hardware.recommended_options),
    ):
        if value is not None and not OmegaConf.is_dict(value):
            problems.append(f"{path} must be a mapping like {{key: value}} (got {value!r})")
    if OmegaConf.is_dict(cfg.server.sim.faults):
        for number, kind in cfg.server.sim.faults.items():
            if not isinstance(number, int) or number < 1 or kind not in FAULTS:
                problems.append(
                    f"server.sim.faults: {number}: {kind} should be <request number>: one of {', '.join(FAULTS)}"
                )
    for name in ("load_ms", "ttft_ms", "itl_ms", "prefill_ms_per_token", "jitter_ms"):
        if getattr(cfg.server.sim, name) < 0:
            problems.append(f"server.sim.{name} must be 0 or more")
    if OmegaConf.is_dict(cfg.hardware.recommended_options):
        recommended = OmegaConf.to_container(cfg.hardware.recommended_options)
        problems += [
            f"hardware.recommended_options.{name} is not an Ollama option"
            for name in recommended
            if name not in OPTION_TYPES
        ]
        try:
            validate_options(recommended)
        except OptionTypeError as exc:
            problems.append(f"hardware.recommended_options: {exc}")
    return problems
