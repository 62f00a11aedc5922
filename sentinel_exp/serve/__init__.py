"""The bundled Ollama-compatible servers (`python -m sentinel_exp.serve`)."""

# The one stdout line a bundled server prints once it listens, followed by JSON {"url", "pid", "engine"}.
READY_PREFIX = "SENTINEL_SERVER_READY "
# The runner's own flag (serve.launch.prepare_standby): not a server option, so not in --help.
STANDBY_FLAG = "--standby"

# Far above any prompt: a bound on what one request body can make a bundled server hold.
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
