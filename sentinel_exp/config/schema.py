"""Typed schema of the experiment config, its checks, and the one conversion from Hydra's tree.

Hydra merges the YAML groups under conf/ onto these dataclasses, so a typo in a key or a value
of the wrong type is rejected while composing. `typed_config` then converts the composed tree
once into an `ExperimentConfig`; everything below the entry point takes these typed sections.
Each section checks its own fields in `problems()`, next to their definitions. The string after
each field is its one-line description, shown by `--help`. Field names of `options` are Ollama
option names, unchanged (see docs/measurement.md, Ollama wire facts).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sentinel_exp.errors import ConfigError
from sentinel_exp.names import Api, Direction, LintMode, ServerKind, SweepOrder
from sentinel_exp.serve.keepalive import KeepAliveError, keep_alive_seconds, server_default_seconds
from sentinel_exp.serve.sim_settings import SimSettings
from sentinel_exp.serve.wire import OPTION_TYPES, OptionTypeError, validate_options
from sentinel_exp.urls import credentials_problem, tracking_uri_problem

if TYPE_CHECKING:
    from omegaconf import DictConfig

# OmegaConf's marker for a value that a config group must supply. OmegaConf itself is imported only
# where Hydra's composed tree becomes typed objects (typed_config), so that the hardware check and
# telemetry, which use these types, import without Hydra.
MISSING = "???"

# Two kinds of field are typed Any in the schema, and checked in problems() instead:
# - free-form mappings: a typed dict would make Hydra reject a whole new mapping given on the command
#   line (`server.sim.faults={3:http_500}`) as keys "not in struct" (`_mapping_problems`);
# - keep_alive, which is a number of seconds or a Go duration string: OmegaConf has no union types;
# - telemetry.prometheus_url, one URL or a list of them, for the same reason.


def _mapping_problems(path: str, value: Any) -> list[str]:
    if value is not None and not isinstance(value, Mapping):
        return [f"{path} must be a mapping like {{key: value}} (got {value!r})"]
    return []


def _keep_alive_problems(path: str, value: Any) -> list[str]:
    try:
        keep_alive_seconds(value)
    except KeepAliveError as exc:
        return [f"{path}: {exc}"]
    return []


@dataclass
class SimConfig(SimSettings):
    """Latency model of the simulated server: the server's own settings type, so the runner and
    `python -m sentinel_exp.serve` share its fields, defaults and checks."""

    # Scripted faults: generation request number (1-based, warmup included) -> fault kind.
    # Typed Any (checked by SimSettings.problems) so that `server.sim.faults={3:http_500}` on the
    # command line replaces the value; a typed dict would reject the new keys as "not in struct".
    faults: Any = None
    """Scripted faults: {request number (1-based, warmup included): fault kind}."""

    def settings(self) -> SimSettings:
        """The plain server settings (faults null = none), as the serve command and engine take them."""
        return SimSettings.from_values(vars(self))


@dataclass
class ServerConfig:
    kind: ServerKind = ServerKind.auto
    """auto | ollama | embedded | simulated | openai (auto: Ollama if it answers, else embedded)."""
    url: str | None = None
    """Base URL of an external server; null = OLLAMA_HOST for ollama, a free port for bundled servers."""
    startup_timeout_s: float = 60.0
    """Seconds a bundled server may take to start."""
    models: Any = None
    """Extra GGUF files the embedded server can serve: {ollama_tag: path}."""
    pid: int | None = None
    """Process to watch for server CPU/RSS when the server is not ours (null = found by its port)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key sent as a Bearer token (the key is never written)."""
    keep_alive: Any = None
    """Default keep_alive of the bundled servers, as OLLAMA_KEEP_ALIVE for Ollama; null = 5m."""
    sim: SimConfig = field(default_factory=SimConfig)

    def problems(self) -> list[str]:
        problems = self.sim.settings().problems("server.sim.") + _mapping_problems("server.models", self.models)
        try:
            server_default_seconds(None if self.keep_alive is None else str(self.keep_alive))
        except KeepAliveError as exc:
            problems.append(f"server.keep_alive: {exc}")
        if self.startup_timeout_s <= 0:
            problems.append(f"server.startup_timeout_s must be positive (got {self.startup_timeout_s})")
        if not self.api_key_env.strip():
            problems.append("server.api_key_env is empty (the name of an environment variable, e.g. OPENAI_API_KEY)")
        if self.url is not None and self.kind in (ServerKind.simulated, ServerKind.embedded):
            problems.append(
                f"server.url={self.url} is not used by server={self.kind}: a bundled server starts on a free "
                f"loopback port of its own; to measure a server that is already running, name its kind "
                f"(server=ollama or server=openai) with server.url"
            )
        return problems


@dataclass
class ModelConfig:
    name: str = MISSING
    """Ollama tag of the model, e.g. qwen2.5:0.5b."""
    description: str | None = None
    """Free text, for people."""

    def problems(self) -> list[str]:
        return [] if self.name.strip() else ["model.name is empty"]


@dataclass
class OptionsConfig:
    """Ollama `options`, every name Ollama knows (api/types.go); null means "not sent", so the
    server's default applies."""

    num_ctx: int | None = None
    """Context window in tokens (runner option: a change reloads the model)."""
    num_batch: int | None = None
    """Prompt tokens processed per batch (runner option)."""
    num_predict: int | None = None
    """Most tokens to generate; -1 = until the model stops."""
    num_thread: int | None = None
    """CPU threads (runner option); more than the physical cores slows decoding."""
    num_gpu: int | None = None
    """Layers offloaded to the GPU (runner option), not "use the GPU"; -1 = automatic."""
    main_gpu: int | None = None
    """GPU for the layers that are not split (runner option)."""
    use_mmap: bool | None = None
    """Memory-map the model file (runner option)."""
    use_mlock: bool | None = None
    """Lock the model in RAM (runner option)."""
    numa: bool | None = None
    """NUMA-aware placement (runner option)."""
    low_vram: bool | None = None
    """Save VRAM at some speed (runner option; older Ollama)."""
    f16_kv: bool | None = None
    """16-bit KV cache (older Ollama)."""
    vocab_only: bool | None = None
    """Load only the vocabulary (older Ollama)."""
    num_keep: int | None = None
    """Prompt tokens kept when the context overflows."""
    temperature: float | None = None
    """Sampling temperature."""
    top_k: int | None = None
    """Sample from the k most likely tokens."""
    top_p: float | None = None
    """Nucleus sampling threshold."""
    min_p: float | None = None
    """Minimum probability relative to the most likely token."""
    typical_p: float | None = None
    """Locally typical sampling."""
    tfs_z: float | None = None
    """Tail-free sampling (older Ollama)."""
    repeat_penalty: float | None = None
    """Penalty on repeated tokens."""
    repeat_last_n: int | None = None
    """How far back the repeat penalty looks."""
    presence_penalty: float | None = None
    """Penalty on tokens already present."""
    frequency_penalty: float | None = None
    """Penalty by token frequency."""
    penalize_newline: bool | None = None
    """Apply the repeat penalty to newlines (older Ollama)."""
    mirostat: int | None = None
    """Mirostat sampling: 0 off, 1 or 2."""
    mirostat_tau: float | None = None
    """Mirostat target entropy."""
    mirostat_eta: float | None = None
    """Mirostat learning rate."""
    seed: int | None = None
    """Sampling seed (reproducible answers)."""
    stop: list[str] | None = None
    """Stop sequences."""

    def chosen(self) -> dict[str, Any]:
        """The options that are set (sent to the server)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


# The least value of each option that has a meaning (Ollama's api/types.go and llama.cpp): a value
# under it measures nothing a user meant, and the option lint would judge it as if it did.
OPTION_MINIMA: Mapping[str, tuple[float, str]] = {
    "num_ctx": (1, "a context size in tokens"),
    "num_batch": (1, "a batch size in tokens"),
    "num_thread": (0, "a thread count (0 = the server decides)"),
    "num_gpu": (-1, "a count of layers on the GPU (-1 = automatic)"),
    "main_gpu": (0, "a GPU index"),
    "num_keep": (-1, "a count of tokens kept (-1 = all)"),
    "top_k": (0, "a count of tokens"),
    "repeat_last_n": (-1, "a count of tokens (-1 = num_ctx)"),
    "temperature": (0, "a temperature"),
}
UNIT_INTERVAL_OPTIONS = ("top_p", "min_p", "typical_p")


def option_value_problems(options: Mapping[str, Any], prefix: str) -> list[str]:
    """Option values that are no value of their option (the types are checked before)."""
    problems = [
        f"{prefix}{name}={options[name]} is not {what}: it takes {least:g} or more"
        for name, (least, what) in OPTION_MINIMA.items()
        if _is_number(options.get(name)) and options[name] < least
    ]
    problems += [
        f"{prefix}{name} must be between 0 and 1 (got {options[name]})"
        for name in UNIT_INTERVAL_OPTIONS
        if _is_number(options.get(name)) and not 0 <= options[name] <= 1
    ]
    if _is_number(options.get("mirostat")) and options["mirostat"] not in (0, 1, 2):
        problems.append(f"{prefix}mirostat must be 0 (off), 1 or 2 (got {options['mirostat']})")
    predict = options.get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and (predict == 0 or predict < -2):
        problems.append(
            f"{prefix}num_predict must be a number of tokens (1 or more), -1 (until the model stops) or -2 "
            f"(until the context is full) (got {predict}): with no token to generate there is no first token to time"
        )
    return problems


@dataclass
class HardwareConfig:
    name: str = "auto"
    """Name of the expected-hardware profile."""
    expect_gpu: bool | None = None
    """true = a GPU must be found, false = none may be (cpu_only), null = no expectation."""
    gpu_name_pattern: str | None = None
    """Case-insensitive regex searched in the GPU's name."""
    min_vram_mb: int | None = None
    """Least total VRAM in MiB, as NVML reports it."""
    recommended_options: Any = None
    """Ollama options applied where the options group leaves them null: {name: value}."""

    def problems(self) -> list[str]:
        problems = _mapping_problems("hardware.recommended_options", self.recommended_options)
        if isinstance(self.recommended_options, Mapping):
            recommended = dict(self.recommended_options)
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


@dataclass
class WorkloadConfig:
    api: Api = Api.chat
    """chat (/api/chat) | generate (/api/generate) | openai (/v1/chat/completions)."""
    requests: int = 20
    """Requests in the measured phase."""
    warmup: int = 2
    """Requests sent first and left out of the statistics."""
    concurrency: int = 1
    """Requests in flight at once."""
    rate: float | None = None
    """Requests per second with Poisson arrivals; null = closed loop."""
    prompts: list[str] = field(default_factory=lambda: ["Why is the sky blue? Answer briefly."])
    """Prompts, cycled."""
    system: str | None = None
    """System prompt; null = none."""
    keep_alive: Any = None
    """Ollama keep_alive sent with each request: seconds or a Go duration; -1 = forever; null = not sent."""
    timeout_s: float = 120.0
    """Read timeout of a request in seconds."""
    cold_load_ms: float = 50.0
    """A request whose server load_duration exceeds this counts as a cold start."""
    seed: int = 0
    """Seed of the Poisson arrivals, think times and synthetic prompts."""
    think_time_s: Any = 0
    """Closed loop: seconds a client waits after a request ends; a number or {distribution: exponential, mean: 2}."""
    idle_every: int = 0
    """Pause all sending for idle_s after every N measured requests (in flight ones end first); 0 = never."""
    idle_s: float = 0.0
    """Seconds of each idle pause (idle_every): reproduces keep_alive expiry between bursts."""
    prompts_file: str | None = None
    """Prompts from a file instead of `prompts`: .txt one a line, .jsonl {"prompt": ...} or {"messages": [...]}."""
    input_tokens: Any = None
    """Synthetic prompts of this many input tokens (or a distribution), calibrated on warmup; null = off."""
    unique_prompts: bool = False
    """Put a per-request nonce first in each prompt so that none hits the server's prompt cache."""
    cold_start: bool = False
    """Unload the model before each measured request (untimed), so every measured request is a cold start."""
    max_error_rate: float | None = None
    """Give up (FAILED, exit 3) once the measured error rate exceeds this fraction; null = never."""
    error_rate_min_requests: int = 10
    """Measured requests finished before max_error_rate applies (a first failure is not 100%)."""

    def longest_idle_gap_s(self) -> float:
        """Longest time, in seconds, the workload leaves the server without a new request: an idle
        pause, a think time, or (open loop) a gap between arrivals. For an unbounded distribution,
        the value one draw in a hundred exceeds (distributions.TYPICAL_MAX_QUANTILE)."""
        from sentinel_exp.config.distributions import TYPICAL_MAX_QUANTILE, DistributionError, parse_distribution

        gaps = [self.idle_s if self.idle_every > 0 else 0.0]
        try:
            gaps.append(parse_distribution(self.think_time_s).typical_max())
        except DistributionError:
            pass  # problems() reports it
        if self.rate is not None and self.rate > 0:
            gaps.append(-math.log(1.0 - TYPICAL_MAX_QUANTILE) / self.rate)
        return max(gaps)

    def _pacing_problems(self) -> list[str]:
        from sentinel_exp.config.distributions import distribution_problems, parse_distribution

        problems = distribution_problems("workload.think_time_s", self.think_time_s)
        if not problems and self.rate is not None and not parse_distribution(self.think_time_s).is_zero:
            problems.append(
                "workload.think_time_s paces a closed loop; with workload.rate the arrivals set the gaps (set one)"
            )
        if self.idle_every < 0 or self.idle_s < 0:
            problems.append(
                f"workload.idle_every and workload.idle_s must be 0 or more (got {self.idle_every}, {self.idle_s:g})"
            )
        elif (self.idle_every > 0) != (self.idle_s > 0):
            problems.append(
                f"workload.idle_every={self.idle_every} and workload.idle_s={self.idle_s:g} go together: "
                "a pause of idle_s seconds after every idle_every measured requests (0 for both = none)"
            )
        return problems

    def _prompt_problems(self) -> list[str]:
        from sentinel_exp.config.distributions import distribution_problems, parse_distribution
        from sentinel_exp.workload.prompts_file import read_prompts_file

        if self.input_tokens is not None:
            if self.prompts_file:
                return ["workload.input_tokens (synthetic prompts) and workload.prompts_file exclude each other"]
            problems = distribution_problems("workload.input_tokens", self.input_tokens)
            if not problems and parse_distribution(self.input_tokens).typical_max() < 1:
                problems.append(f"workload.input_tokens must be at least 1 token (got {self.input_tokens})")
            return problems
        if not self.prompts_file:
            return []
        try:
            prompts = read_prompts_file(self.prompts_file)
        except ConfigError as exc:
            return [str(exc)]
        if self.api == Api.generate and any(p.is_chat for p in prompts):
            return [
                f"workload.prompts_file {self.prompts_file} holds chat messages, which /api/generate cannot carry "
                "(one prompt): use workload.api=chat or openai, or a file of prompts"
            ]
        return []

    def problems(self) -> list[str]:
        problems = self._pacing_problems() + self._prompt_problems()
        if self.cold_start and (self.concurrency > 1 or self.rate is not None):
            problems.append(
                "workload.cold_start=true needs a closed loop of one request at a time (workload.concurrency=1, "
                "workload.rate=null): an unload cannot wait for requests in flight or for an arrival schedule"
            )
        if self.requests < 1:
            problems.append(f"workload.requests must be at least 1 (got {self.requests})")
        if self.warmup < 0:
            problems.append(f"workload.warmup must be 0 or more (got {self.warmup})")
        if self.concurrency < 1:
            problems.append(f"workload.concurrency must be at least 1 (got {self.concurrency})")
        if self.rate is not None and self.rate <= 0:
            problems.append(f"workload.rate must be positive requests/s, or null for a closed loop (got {self.rate})")
        if self.timeout_s <= 0:
            problems.append(f"workload.timeout_s must be positive (got {self.timeout_s})")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate < 1:
            problems.append(
                f"workload.max_error_rate is a fraction of failed requests, 0 up to (not including) 1, "
                f"or null for no limit (got {self.max_error_rate})"
            )
        if self.error_rate_min_requests < 1:
            problems.append(f"workload.error_rate_min_requests must be at least 1 (got {self.error_rate_min_requests})")
        if not self.prompts or any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            problems.append("workload.prompts must be a non-empty list of non-empty strings")
        return problems + _keep_alive_problems("workload.keep_alive", self.keep_alive)


@dataclass
class TelemetryConfig:
    enabled: bool = True
    """Sample CPU, memory and GPU during the run."""
    interval_s: float = 0.1
    """Seconds between samples."""
    gpu: bool = True
    """Sample the GPUs through NVML."""
    log_series: bool = True
    """Write the raw samples as MLflow step metrics."""
    prometheus_url: Any = None
    """Prometheus exporter(s) on the target host (node-exporter, dcgm-exporter): a URL or a list; null = none."""
    prometheus_interval_s: float = 1.0
    """Seconds between scrapes of telemetry.prometheus_url."""

    def prometheus_urls(self) -> list[str]:
        """The exporter URLs, each with /metrics where it names no path (checked by problems())."""
        given = self.prometheus_url
        urls = [] if given is None else [given] if isinstance(given, str) else list(given)
        return [url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics" for url in urls]

    def problems(self) -> list[str]:
        problems = [] if self.interval_s > 0 else [f"telemetry.interval_s must be positive (got {self.interval_s})"]
        if self.prometheus_interval_s <= 0:
            problems.append(f"telemetry.prometheus_interval_s must be positive (got {self.prometheus_interval_s})")
        given = self.prometheus_url
        urls = [given] if isinstance(given, str) else given
        if given is None:
            return problems
        if not isinstance(urls, (list, tuple)) or not urls:
            return [*problems, f"telemetry.prometheus_url must be a URL or a list of URLs (got {given!r})"]
        return problems + [p for url in urls for p in _exporter_url_problems(url)]


def _exporter_url_problems(url: Any) -> list[str]:
    example = "e.g. http://gpu-box:9100/metrics"
    if not isinstance(url, str):
        return [f"telemetry.prometheus_url: {url!r} is not a URL ({example})"]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        return [f"telemetry.prometheus_url: {url!r} is not a valid URL ({exc}; {example})"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"telemetry.prometheus_url: {url!r} is not an http(s) URL with a host ({example})"]
    return []


@dataclass
class TrackingConfig:
    enabled: bool = True
    """Log the run to MLflow."""
    uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI: a sqlite:/// store or an http(s):// tracking server (no user:pass@ in it)."""
    experiment: str = "sentinel-exp"
    """MLflow experiment name."""
    run_name: str | None = None
    """Run name; null = named by what differs (the overrides) and the server."""

    def problems(self) -> list[str]:
        problems = [] if self.experiment.strip() else ["tracking.experiment is empty"]
        if problem := credentials_problem(self.uri, "tracking.uri"):
            problems.append(problem)
        if self.enabled and (problem := tracking_uri_problem(self.uri, "tracking.uri")):
            problems.append(problem)
        return problems


@dataclass
class SweepConfig:
    name: str = "none"
    """Name of the sweep preset."""
    description: str | None = None
    """What the preset compares."""
    objective: str = "ttft_ms_p50"
    """The metric each job returns to the sweeper (an optimizer such as Optuna's seeks it)."""
    direction: Direction = Direction.minimize
    """minimize | maximize; a job without the metric returns the worst value (+inf or -inf)."""

    order: SweepOrder = SweepOrder.interleaved
    """interleaved: all arms in balanced rounds against one server, paired; sequential: each job on its own."""

    def problems(self) -> list[str]:
        return [] if self.objective.strip() else ["sweep.objective is empty (a metric name, e.g. ttft_ms_p50)"]


@dataclass
class RequestSloConfig:
    """Per-request targets: a measured request meets them when it succeeded within every limit set."""

    ttft_ms: float | None = None
    """Most ms to a request's first token; null = no target."""
    e2e_ms: float | None = None
    """Most ms for a request's whole answer; null = no target."""
    itl_ms: float | None = None
    """Most ms between tokens, on average over a request's answer; null = no target."""

    def limits(self) -> dict[str, float]:
        """The limits that are set, by measure name (slo.REQUEST_MEASURES)."""
        return {k: float(v) for k, v in dataclasses.asdict(self).items() if v is not None}

    def problems(self) -> list[str]:
        return [f"slo.request.{k} must be positive ms (got {v:g})" for k, v in self.limits().items() if v <= 0]


@dataclass
class SloConfig:
    """Service-level targets. A run-level target is a key of its own, `slo.<metric>: <limit>`, for
    any metric whose better direction is known (analysis/metrics.py); `request` holds the
    per-request targets. The `slo` node is open (register_configs), so `slo.ttft_ms_p50=300` needs
    no `+`, and OmegaConf.to_object sets those keys as attributes: `targets()` reads them back."""

    request: RequestSloConfig = field(default_factory=RequestSloConfig)

    def targets(self) -> dict[str, Any]:
        """The run-level targets as given (null = no target)."""
        return {k: v for k, v in vars(self).items() if k != "request" and v is not None}

    def run_targets(self) -> dict[str, float]:
        """The run-level targets as numbers: {metric: limit}."""
        return {k: float(v) for k, v in self.targets().items() if _is_number(v)}

    def problems(self) -> list[str]:
        problems = self.request.problems()
        for metric, limit in self.targets().items():
            if problem := slo_metric_problem(metric):
                problems.append(f"slo.{metric}: {problem}")
            elif not _is_number(limit):
                problems.append(f"slo.{metric} must be a number, the limit (got {limit!r})")
        return problems


SLO_METRIC_HINT = (
    "not a metric with a known better direction: lower is better for *_ms_* (e.g. ttft_ms_p50), "
    "error_rate, cold_starts, requests_failed, cpu and energy; higher for *_tokens_per_s, "
    "requests_per_s and goodput_requests_per_s"
)


def slo_metric_problem(metric: str) -> str | None:
    """Why `slo.<metric>` can hold no target: a name no run logs (with the one it most likely
    meant: a misspelt target would otherwise fail every run, as a metric that is never there), or
    a metric with no better direction."""
    from sentinel_exp.analysis.metric_names import closest, is_logged
    from sentinel_exp.analysis.metrics import direction

    if not is_logged(metric) and (meant := closest(metric)) is not None:
        return f"not a metric this tool logs; did you mean {meant}?"
    if not is_logged(metric) or direction(metric) is None:
        return SLO_METRIC_HINT
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class CompareConfig:
    min_effect_pct: float = 2.0
    """A change smaller than this many percent is never called improved or worse."""
    baseline: str | None = None
    """The configuration the others are compared with, by a swept value (options=default); null = the first."""
    blocks: int | None = None
    """Rounds an interleaved study cuts each arm's requests into; null = 2+ requests per stream, at most 10."""
    budget_s: float | None = None
    """Seconds an interleaved study may spend adding rounds until the objective is decided; null = fixed rounds."""
    switch_warmup: int = 1
    """Uncounted requests after a switch to an arm with other runner options (the model reloads)."""
    seed: int = 0
    """Seed of the study's balanced order of arms in each round."""

    def problems(self) -> list[str]:
        problems = []
        if self.min_effect_pct < 0:
            problems.append(f"compare.min_effect_pct must be 0 or more (got {self.min_effect_pct})")
        if self.blocks is not None and self.blocks < 1:
            problems.append(f"compare.blocks must be at least 1 (got {self.blocks})")
        if self.budget_s is not None and self.budget_s <= 0:
            problems.append(f"compare.budget_s must be positive seconds (got {self.budget_s:g})")
        if self.switch_warmup < 0:
            problems.append(f"compare.switch_warmup must be 0 or more (got {self.switch_warmup})")
        return problems


@dataclass
class DiagnoseConfig:
    """The doctor (`sweep=diagnose`): a baseline, hypotheses from its evidence, and the candidate
    fixes measured against it in interleaved studies (sentinel_exp/doctor/)."""

    budget_s: float = 600.0
    """Seconds of machine time the doctor may spend: the baseline and every study together."""
    min_share: float = 0.2
    """A part of TTFT or E2E (load, queueing, prefill, decode) under this share of the mean is ruled out."""
    slow_decode_tokens_per_s: float = 20.0
    """A decode slower than this (tokens/s per request) is worth a fix; faster, decode is not a cause."""
    long_prompt_tokens: int = 64
    """Prompts shorter than this many tokens (on average) are too short for prefill to be the cause."""
    min_gain_pct: float = 10.0
    """A hypothesis is refuted once its candidates' intervals rule out an improvement this large (percent)."""

    def problems(self) -> list[str]:
        problems = []
        if self.budget_s <= 0:
            problems.append(f"diagnose.budget_s must be positive seconds (got {self.budget_s:g})")
        if not 0 < self.min_share < 1:
            problems.append(f"diagnose.min_share is a share of the latency, between 0 and 1 (got {self.min_share:g})")
        if self.slow_decode_tokens_per_s <= 0:
            problems.append(
                f"diagnose.slow_decode_tokens_per_s must be positive tokens/s (got {self.slow_decode_tokens_per_s:g})"
            )
        if self.long_prompt_tokens < 1:
            problems.append(f"diagnose.long_prompt_tokens must be at least 1 (got {self.long_prompt_tokens})")
        if self.min_gain_pct <= 0:
            problems.append(f"diagnose.min_gain_pct must be a positive percentage (got {self.min_gain_pct:g})")
        return problems


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
    compare: CompareConfig = field(default_factory=CompareConfig)
    slo: SloConfig = field(default_factory=SloConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    repeat: int = 0
    """Repeat index of this configuration (sweep=repeat3 sweeps it); not part of the config hash."""
    arm: str = ""
    """A label that tells apart two arms of one configuration (sweep=aa); not part of the config hash."""
    force: bool = False
    """In a sweep, measure even a configuration and repeat already FINISHED in the MLflow experiment."""
    progress: bool | None = None
    """Progress bars; null = only on a terminal and not in CI."""
    plots: bool = True
    """Write latency CDF and timeline PNGs and report.md for each run (about 2 s after measuring)."""
    lint: LintMode = LintMode.warn
    """warn | strict | off: option lint findings (num_gpu 1, num_thread over cores, ...) warn, stop the run, or none."""

    def problems(self) -> list[str]:
        problems = self.server.problems() + self.model.problems() + self.hardware.problems()
        problems += option_value_problems(self.options.chosen(), "options.")
        if isinstance(self.hardware.recommended_options, Mapping):
            recommended = dict(self.hardware.recommended_options)
            problems += option_value_problems(recommended, "hardware.recommended_options.")
        problems += self.workload.problems() + self.telemetry.problems() + self.tracking.problems()
        problems += self.sweep.problems() + self.compare.problems() + self.slo.problems()
        problems += self.diagnose.problems()
        if self.repeat < 0:
            problems.append(f"repeat must be 0 or more (got {self.repeat})")
        if self.server.kind == ServerKind.openai and self.workload.api == Api.generate:
            problems.append("workload.api=generate needs an Ollama server; server=openai speaks /v1/chat/completions")
        if self.server.kind == ServerKind.openai and self.workload.cold_start:
            problems.append(
                "workload.cold_start=true needs an Ollama-API server: server=openai has no way to unload a model"
            )
        return problems

    def effective_options(self) -> dict[str, Any]:
        """Options sent to the server: the hardware profile's recommendations, overridden by every
        option the options group sets (null = not sent)."""
        return {**dict(self.hardware.recommended_options or {}), **self.options.chosen()}

    def as_dict(self) -> dict[str, Any]:
        """Plain values (enums as their strings): for params, the config hash and config.yaml."""
        plain = typing.cast("dict[str, Any]", _plain(dataclasses.asdict(self)))
        plain["slo"].update(_plain(self.slo.targets()))  # keys asdict does not see: not fields
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, Enum) else value


def to_yaml(plain: Mapping[str, Any]) -> str:
    """config.yaml as OmegaConf writes it: keys in schema order, block style."""
    import yaml

    return str(yaml.safe_dump(dict(plain), sort_keys=False, allow_unicode=True, default_flow_style=False))


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(ExperimentConfig)
    # Run-level SLO targets are keys named after metrics (`slo.ttft_ms_p50=300`): an open node takes
    # them without a `+`, and SloConfig.problems() checks them instead of the schema.
    OmegaConf.set_struct(schema.slo, False)
    ConfigStore.instance().store(name="experiment_schema", node=schema)


# Settings that would put a secret into params, config.yaml, Hydra's .hydra/ files and run names.
SECRET_SETTINGS = {
    "server.api_key": "server.api_key is not a setting: an API key is read only from the environment variable "
    "named by server.api_key_env (default OPENAI_API_KEY), e.g. `export OPENAI_API_KEY=...`, so it is never "
    "written to the run's files, MLflow or the console",
}


def unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys added with `+key=value` that the schema does not know (Hydra lets `+` add them)."""
    from omegaconf import OmegaConf

    hints = typing.get_type_hints(schema)
    problems = []
    for key in map(str, node):
        if f"{prefix}{key}" in SECRET_SETTINGS:
            problems.append(SECRET_SETTINGS[f"{prefix}{key}"])
        elif key not in hints and schema is SloConfig:
            continue  # a run-level target, checked by SloConfig.problems()
        elif key not in hints:
            known = "an Ollama option" if schema is OptionsConfig else "a known setting"
            problems.append(f"{prefix}{key} is not {known}")
        elif dataclasses.is_dataclass(hints[key]) and OmegaConf.is_dict(node[key]):
            problems += unknown_keys(node[key], hints[key], f"{prefix}{key}.")
    return problems


def typed_config(cfg: DictConfig) -> ExperimentConfig:
    """The composed config as dataclasses, checked: every problem in one ConfigError (exit 2)."""
    from omegaconf import OmegaConf

    problems = unknown_keys(cfg, ExperimentConfig)
    if not problems:
        typed = OmegaConf.to_object(cfg)
        assert isinstance(typed, ExperimentConfig)  # the schema is the root of config.yaml's defaults
        problems = typed.problems()
        if not problems:
            return typed
    raise ConfigError("invalid configuration: " + "; ".join(problems) + ".")


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """The one-line description of each field of a config dataclass: the string written under it,
    or the `doc` in its metadata (the simulated server's settings carry theirs there, for argparse)."""
    docs = {f.name: str(f.metadata["doc"]) for f in dataclasses.fields(schema) if "doc" in f.metadata}
    for base in reversed(schema.__mro__[:-1]):
        docs.update(_attribute_docstrings(base))
    return docs


def _attribute_docstrings(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def settings_help(schema: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, str]]:
    """(dot path, description) for every setting, in schema order."""
    rows: list[tuple[str, str]] = []
    docs = field_docs(schema)
    for item in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[item.name]
        if dataclasses.is_dataclass(hint):
            rows += settings_help(typing.cast("type", hint), f"{prefix}{item.name}.")
        else:
            rows.append((f"{prefix}{item.name}", docs.get(item.name, "")))
    return rows
