"""The fixed vocabularies of sentinel-exp, as StrEnums: they compare equal to, print as and
serialise as their plain string values, so records, tags and MLflow names are unchanged."""

from __future__ import annotations

from enum import StrEnum

# Enums that are config values have lower-case member names equal to their values: OmegaConf
# reads an enum field by member name, so `server.kind=openai` and the YAML stay as users write them.


class ServerKind(StrEnum):
    """`server.kind`: auto resolves to one of the others before any request."""

    auto = "auto"
    ollama = "ollama"
    embedded = "embedded"
    simulated = "simulated"
    openai = "openai"


class Api(StrEnum):
    """The wire API a run speaks: Ollama's chat or generate, or OpenAI chat completions."""

    chat = "chat"
    generate = "generate"
    openai = "openai"


class Phase(StrEnum):
    WARMUP = "warmup"
    MEASURED = "measured"
    DONE = "done"


class ErrorClass(StrEnum):
    """Error classes the client assigns itself; a failed request may also carry `HTTP<status>`
    or the name of the httpx exception (ConnectError, ReadTimeout, ...)."""

    STREAM_CUT = "StreamCut"
    MALFORMED_CHUNK = "MalformedChunk"
    SERVER_ERROR = "ServerError"
    CANCELLED = "Cancelled"


class FaultKind(StrEnum):
    """Faults the simulated server can be scripted to inject."""

    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    ERROR_MIDSTREAM = "error_midstream"
    CUT_STREAM = "cut_stream"
    EARLY_END = "early_end"
    MALFORMED = "malformed"
    STALL = "stall"


class Role(StrEnum):
    """What a run folder's run.json describes (tag `sentinel.role` in MLflow for a sweep)."""

    RUN = "run"
    SWEEP = "sweep"  # a sweep's parent: it measured nothing itself, its jobs are its children


class RunStatus(StrEnum):
    """MLflow's run statuses, as sentinel-exp sets them: RUNNING while measuring, then one of the others."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Direction(StrEnum):
    """`sweep.direction`: whether a sweeper seeks the lowest or the highest `sweep.objective`."""

    minimize = "minimize"
    maximize = "maximize"


class SweepOrder(StrEnum):
    """`sweep.order`: whether a configuration's runs go back to back, or alternate with the other arms'."""

    sequential = "sequential"
    interleaved = "interleaved"


class LintMode(StrEnum):
    """`lint`: whether an option lint finding warns, or stops the run before any request (exit 2)."""

    warn = "warn"
    strict = "strict"
    off = "off"


class Placement(StrEnum):
    """`sentinel.placement`: where the loaded model lives, from the server's /api/ps."""

    gpu = "gpu"
    partial = "partial"
    cpu = "cpu"


class TelemetrySource(StrEnum):
    """`sentinel.telemetry_source`: where a run's host CPU, memory and GPU figures come from."""

    local = "local"  # this machine's own counters (psutil, NVML): the target is this machine
    prometheus = "prometheus"  # the target host's exporters (telemetry.prometheus_url)
    unavailable = "unavailable"  # a remote target without a reachable exporter: no host figures


class DistributionKind(StrEnum):
    """Distributions a workload quantity (think time, prompt length) can be drawn from."""

    exponential = "exponential"
    uniform = "uniform"
    lognormal = "lognormal"
