"""`python -m sentinel_exp.serve`: run a bundled Ollama-compatible server standalone.

    python -m sentinel_exp.serve --engine simulated --port 11500 --ttft-ms 40 --itl-ms 5
    python -m sentinel_exp.serve --engine embedded --port 11500

`--engine embedded` is the llama.cpp server that `server=embedded` starts (`--engine llamacpp`,
its former name, still works). With --port 0 a free port is chosen. One line
`SENTINEL_SERVER_READY {"url": ..., "pid": ..., "engine": ...}` is printed on stdout once the
socket is listening, which is how the runner finds the port.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from sentinel_exp import __version__, eventloop
from sentinel_exp.names import ServerKind
from sentinel_exp.serve import DEFAULT_MAX_BODY_BYTES, READY_PREFIX, STANDBY_FLAG
from sentinel_exp.serve.engine import Engine
from sentinel_exp.serve.engines.simulated import DEFAULT_MODELS, SimulatedEngine
from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE, server_default_seconds
from sentinel_exp.serve.sim_settings import SimSettings

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

ENGINES = (ServerKind.simulated, ServerKind.embedded)
# The embedded engine's former name, kept for scripts that use it.
DEPRECATED_ENGINE_NAMES = {"llamacpp": ServerKind.embedded}
# Generation slots of the embedded engine unless --parallel says otherwise: Ollama's default.
EMBEDDED_PARALLEL = 1


def engine_name(text: str) -> str:
    """An --engine value, with a deprecated name replaced by the current one (and a warning)."""
    if text in DEPRECATED_ENGINE_NAMES:
        current = DEPRECATED_ENGINE_NAMES[text]
        print(f"warning: --engine {text} is deprecated; use --engine {current}", file=sys.stderr)
        return current
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sentinel_exp.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engine",
        type=engine_name,
        choices=ENGINES,
        required=True,
        help="simulated: model-free, with known timing; embedded: GGUF models on llama.cpp (also: llamacpp)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; beyond loopback a warning says so: the Ollama routes have no authentication",
    )
    parser.add_argument("--port", type=int, default=11434, help="0 = any free port")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="TAG[=GGUF]",
        help="model to serve (repeatable); embedded takes TAG=path/to/model.gguf",
    )
    parser.add_argument(
        "--max-body-kb",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES // 1024,
        metavar="KB",
        help="refuse request bodies larger than this with 413 (default: %(default)s)",
    )
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        default=None,
        metavar="PID",
        help="stop when process PID is gone (used by the runner)",
    )
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require `Authorization: Bearer $VAR` on the OpenAI routes (/v1/...), as vLLM's --api-key; "
        "the key is read from the environment variable VAR, never from the command line",
    )
    parser.add_argument(
        "--keep-alive",
        default=None,
        metavar="DURATION",
        help="keep_alive of requests that send none, as OLLAMA_KEEP_ALIVE sets it for "
        "Ollama: a Go duration ('5m', '30s') or seconds, negative = forever "
        f"(default: $OLLAMA_KEEP_ALIVE, else {DEFAULT_KEEP_ALIVE})",
    )
    SimSettings.add_arguments(parser, "simulated engine (--parallel applies to both)")
    return parser


def build_engine(args: argparse.Namespace) -> tuple[Engine, int]:
    """The engine and its number of generation slots (0 = unlimited)."""
    if args.engine == ServerKind.simulated:
        settings = SimSettings.from_args(args)
        tags = [m.partition("=")[0] for m in args.model] or list(DEFAULT_MODELS)
        return SimulatedEngine(settings, tags), settings.parallel
    from sentinel_exp.serve.engines.llamacpp import EngineUnavailable, LlamaCppEngine

    extra = {}
    for item in args.model:
        tag, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--model for {ServerKind.embedded} needs TAG=path/to/file.gguf, got {item!r}")
        extra[tag] = path
    try:
        engine = LlamaCppEngine(extra_models=extra)
    except EngineUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    parallel: int = getattr(args, "parallel", EMBEDDED_PARALLEL)  # unset flags stay out of args
    return engine, parallel


async def _watch_parent(pid: int, server: Any) -> None:
    while not server.should_exit:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            server.should_exit = True
            return
        except PermissionError:
            pass
        await asyncio.sleep(1.0)


def _drop_scripted_aborts(record: logging.LogRecord) -> bool:
    """A cut stream is the simulated fault asked for, not a server bug worth a traceback."""
    from sentinel_exp.serve.engine import AbortConnection

    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, AbortConnection)


def _log_model_events() -> None:
    """Loads and unloads, one line each on stderr (a run keeps it as server.log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    events = logging.getLogger("sentinel_exp.serve")
    events.addHandler(handler)
    events.setLevel(logging.INFO)
    events.propagate = False


def _join_negative_durations(argv: list[str]) -> list[str]:
    """`--keep-alive -1m` as `--keep-alive=-1m`: argparse takes "-1m" for an option otherwise."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--keep-alive" and arg[:2] in {f"-{d}" for d in "0123456789."}:
            out[-1] = f"--keep-alive={arg}"
        else:
            out.append(arg)
    return out


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ValueError(f"--api-key-env {variable}: the environment variable {variable} is empty or not set")
    return key


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_negative_durations(sys.argv[1:] if argv is None else argv))
    try:
        engine, parallel = build_engine(args)
        keep_alive_s = server_default_seconds(
            args.keep_alive if args.keep_alive is not None else os.environ.get("OLLAMA_KEEP_ALIVE")
        )
        api_key = _api_key(args.api_key_env)
    except ValueError as exc:  # KeepAliveError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from sentinel_exp.serve.app import AppSettings, create_app

    sock = _listen(args.host, args.port)
    if sock is None:
        return 2
    settings = AppSettings(
        parallel=parallel,
        version=f"{__version__}-sentinel-{engine.name}",
        default_keep_alive_s=keep_alive_s,
        api_key=api_key,
        max_body_bytes=args.max_body_kb * 1024,
    )
    server = _uvicorn_server(create_app(engine, settings))
    logging.getLogger("uvicorn.error").addFilter(_drop_scripted_aborts)
    _log_model_events()
    eventloop.run(_serve(server, sock, engine.name, args.exit_with_parent))
    return 0


def _listen(host: str, port: int) -> socket.socket | None:
    """The listening socket (port 0: a free one); None, with the error said, when it cannot bind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return None
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    if not _is_loopback(host):
        print(
            f"warning: listening on {host}:{port}, beyond loopback: this server has no authentication on its "
            f"Ollama routes (/api/...): anyone who can reach the address can use it",
            file=sys.stderr,
            flush=True,
        )
    return sock


def _uvicorn_server(app: Starlette) -> uvicorn.Server:
    import uvicorn

    # Stopped by the runner, nothing is left to finish: a load in progress must not hold the exit
    # back for seconds. (uvicorn annotates this as int but hands it to asyncio.wait_for.)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=0.25,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config)


async def _serve(server: uvicorn.Server, sock: socket.socket, engine: str, parent_pid: int | None) -> None:
    """Serve until stopped (or the parent is gone), after the ready line the runner waits for."""
    watcher = asyncio.create_task(_watch_parent(parent_pid, server)) if parent_pid else None
    host, port = sock.getsockname()[:2]
    print(READY_PREFIX + json.dumps({"url": f"http://{host}:{port}", "pid": os.getpid(), "engine": engine}), flush=True)
    await server.serve(sockets=[sock])
    if watcher is not None:
        watcher.cancel()


def standby() -> int:
    """`--standby`, for the runner (serve.launch.prepare_standby): import what serving needs, then
    wait for the real command line on stdin, one JSON line {"argv": [...], "log": path}, and serve
    as `main(argv)` with stderr going to the log. A sweep's next job then starts its server without
    waiting for these imports. Stdin closed first (the runner is gone or done): exit."""
    import uvicorn  # noqa: F401

    from sentinel_exp.serve import app  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    log = open(order["log"], "w", encoding="utf-8")  # noqa: SIM115 (the server's stderr to its end)
    os.dup2(log.fileno(), sys.stderr.fileno())
    return main(list(order["argv"]))


if __name__ == "__main__":
    sys.exit(standby() if sys.argv[1:] == [STANDBY_FLAG] else main())
