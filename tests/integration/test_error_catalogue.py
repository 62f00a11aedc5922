"""The catalogue of bad input: configuration, command line, environment and server answers, each
through the real CLI with the message a user sees and the exit status. The "When something is
wrong" table of docs/guides/troubleshooting.md lists the same cases (checked below), so the
documentation cannot drift from what the tool does. Cases needing a server use the simulated one,
started by the run or here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from support.cli import REPO, run_cli

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import BundledServer, running_server
from sentinel_exp.urls import TRACKING_SCHEMES

QUICK = ["workload=quick", "telemetry.enabled=false", "plots=false"]
SIM = ["server=simulated", *QUICK]


@dataclass(frozen=True)
class Case:
    what: str  # as the troubleshooting page's table names it
    args: tuple[str, ...]  # `{url}`: a simulated server started for the catalogue; `{file}`: a regular file
    fragment: str  # in the one-line message on stderr
    status: int


CASES = [
    # The command line, before Hydra composes.
    Case("a misspelt setting", ("workload.requets=3",), "did you mean workload.requests?", 2),
    Case("an unknown choice", ("options=nope",), "options=nope", 2),
    Case("a value of the wrong type", ("options.num_ctx=abc",), "options.num_ctx='abc' is not valid", 2),
    Case("an API key on the command line", ("server.api_key=sk-123",), "API key is read only from the environment", 2),
    Case(
        "a password in the tracking URI",
        ("tracking.uri=http://alice:secret@127.0.0.1:9",),
        "credentials are read only from the environment",
        2,
    ),
    # The typed config's checks.
    Case("no request at all", ("workload.requests=0",), "workload.requests must be at least 1", 2),
    Case("a negative rate", ("workload.rate=-1",), "workload.rate must be positive", 2),
    Case("a keep_alive that is no duration", ("workload.keep_alive=forever",), "invalid duration 'forever'", 2),
    Case("a server keep_alive that is no duration", ("server.keep_alive=soon",), "invalid default keep_alive", 2),
    Case("a simulated answer of no tokens", ("server.sim.tokens=0",), "server.sim.tokens must be at least 1", 2),
    Case("a blank experiment name", ("tracking.experiment=' '",), "tracking.experiment is empty", 2),
    Case("a zero telemetry interval", ("telemetry.interval_s=0",), "telemetry.interval_s must be positive", 2),
    Case(
        "an exporter URL that is no http(s) URL",
        ("telemetry.prometheus_url=gpu-box:9100",),
        "telemetry.prometheus_url: 'gpu-box:9100' is not an http(s) URL with a host",
        2,
    ),
    Case("an error-rate limit that is no fraction", ("workload.max_error_rate=1.5",), "workload.max_error_rate", 2),
    Case(
        "an unknown think-time distribution",
        ("workload.think_time_s={distribution:gamma,mean:1}",),
        "workload.think_time_s",
        2,
    ),
    Case("a prompts file that is not there", ("workload.prompts_file=nowhere.txt",), "no file nowhere.txt", 2),
    Case(
        "cold starts on purpose with requests in parallel",
        ("workload.cold_start=true", "workload.concurrency=2"),
        "workload.cold_start=true needs a closed loop of one request at a time",
        2,
    ),
    Case(
        "the generate API against an OpenAI server",
        ("server=openai", "workload.api=generate"),
        "workload.api=generate needs an Ollama server",
        2,
    ),
    Case("an option value that is no value of it", ("options.num_ctx=-5",), "options.num_ctx=-5 is not a", 2),
    Case("an answer of no tokens asked for", ("options.num_predict=0",), "no first token to time", 2),
    Case("a server URL for a bundled server", ("server.url=http://127.0.0.1:1",), "is not used by server=simulated", 2),
    Case("an SLO target that is no number", ("slo.ttft_ms_p50=fast",), "slo.ttft_ms_p50 takes a number", 2),
    Case("an unknown SLO metric", ("slo.nonsense=3",), "slo.nonsense: not a metric", 2),
    Case("a misspelt SLO metric", ("slo.ttft_ms_p5=300",), "did you mean ttft_ms_p50?", 2),
    # Where the run would write.
    Case("an output folder under a file", ("hydra.run.dir={file}/run",), "is a file, not a folder", 2),
    Case("an MLflow store under a file", ("tracking.uri=sqlite:///{file}/mlflow.db",), "is a file", 2),
    Case("a tracking URI no store answers to", ("tracking.uri=ftp://x",), "is no store MLflow can log to", 2),
    # Measured all the same: the run folder holds it until `python -m sentinel_exp.sync` uploads it.
    Case("a tracking server that is down", ("tracking.uri=http://127.0.0.1:9",), "not logged to MLflow", 4),
    # The server.
    Case("an OpenAI server that does not answer", ("server=openai",), "did not answer GET /v1/models", 2),
    Case("a server URL that is no URL", ("server=ollama", "server.url=ftp://x"), "is not a valid host or URL", 2),
    Case("no Ollama where it should be", ("server=ollama", "server.url=127.0.0.1:9"), "Ollama does not answer", 2),
    Case(
        "a model the server does not have",
        ("server=ollama", "server.url={url}", "model.name=nope:1b"),
        "nope:1b",
        2,
    ),
    Case(
        "a wrong path to an OpenAI server",
        ("server=openai", "server.url={url}/openai/v2"),
        "answers 404 Not Found",
        2,
    ),
    Case(
        "an option lint finding under lint=strict",
        ("server=ollama", "server.url={url}", "lint=strict", "options=low_ctx"),
        "lint=strict",
        2,
    ),
    # What the server answers: the run measured, and gave up.
    Case(
        "every request timing out",
        ("server.sim.ttft_ms=600", "workload.timeout_s=0.2", "workload.warmup=0"),
        "no measured request succeeded: 5 failed (ReadTimeout 5)",
        3,
    ),
    Case(
        "a timeout no warmup request could meet",
        ("server.sim.ttft_ms=600", "workload.timeout_s=0.2"),
        "every warmup request (1) timed out after workload.timeout_s=0.2 s",
        3,
    ),
    Case(
        "every request failing with HTTP 500",
        ("server.sim.faults={1:http_500,2:http_500,3:http_500,4:http_500,5:http_500}", "workload.warmup=0"),
        "no measured request succeeded: 5 failed (HTTP500 5)",
        3,
    ),
]


def test_the_catalogue_has_at_least_25_distinct_cases():
    assert len(CASES) >= 25
    assert len({c.what for c in CASES}) == len(CASES) and len({c.args for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def sim() -> Iterator[BundledServer]:
    with running_server(ServerKind.simulated, ["--load-ms", "0", "--ttft-ms", "1", "--itl-ms", "0"]) as server:
        yield server


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, sim):
    base = tmp_path_factory.mktemp("catalogue")
    (base / "afile").write_text("not a folder")

    def run(index_case):
        index, case = index_case
        cwd = base / f"case{index}"
        cwd.mkdir()
        args = [a.replace("{url}", sim.url).replace("{file}", str(base / "afile")) for a in case.args]
        server = [] if any(a.startswith("server=") for a in args) else ["server=simulated"]
        return run_cli(cwd, *server, *QUICK, *args, timeout_s=120)

    # Two at a time: each is a Python process that mostly starts up.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, enumerate(CASES)))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.what for c in CASES])
def test_each_bad_input_gets_its_message_and_exit_status(outcomes, index):
    case, result = CASES[index], outcomes[index]
    assert result.returncode == case.status, result.output
    assert case.fragment in result.stderr, result.output
    assert "Traceback" not in result.output
    assert "sk-123" not in result.output


@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c.status == 2], ids=lambda i: CASES[i].what)
def test_a_bad_input_is_one_error_line_and_leaves_no_run_folder(outcomes, index):
    result = outcomes[index]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and CASES[index].fragment in errors[0], result.stderr
    # Stopped before the first request: nothing in outputs/ (hydra.run.dir's default) or elsewhere.
    made = [p for p in result.cwd.rglob("*") if p.name in {"run.json", "config.yaml", "requests.jsonl"}]
    assert made == [], made


def test_the_troubleshooting_page_lists_the_same_cases():
    text = (REPO / "docs" / "guides" / "troubleshooting.md").read_text(encoding="utf-8")
    section = text.split("## When something is wrong", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `(.+?)` \| (\d) \|$", section, flags=re.M)
    assert [(what, int(status)) for what, _, status in rows] == [(c.what, c.status) for c in CASES]


def test_the_tracking_uris_the_config_accepts_are_the_stores_mlflow_has():
    """`tracking.uri=ftp://x` is refused before measuring because no MLflow store takes it; any
    scheme MLflow has a store for must pass."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    assert set(_tracking_store_registry._registry) == TRACKING_SCHEMES
