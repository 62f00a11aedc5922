"""An API key travels from its environment variable to the server's Authorization header and
nowhere else: not into config files, Hydra's folders, MLflow (database and artifacts) or the console."""

from __future__ import annotations

import secrets

import httpx
from support.cli import cli_env, mlflow_runs, run_cli

from sentinel_exp.serve.launch import running_server


def test_the_key_reaches_the_server_and_is_written_nowhere(tmp_path):
    key = "sk-sentinel-" + secrets.token_hex(16)
    with running_server(
        "simulated", ["--api-key-env", "SERVER_KEY", "--load-ms", "0"], env={"SERVER_KEY": key}
    ) as server:
        # The server really checks: without the key, or with another, it refuses.
        chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=chat).status_code == 401
        wrong = httpx.post(f"{server.url}/v1/chat/completions", json=chat, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        overrides = ("server=openai", f"server.url={server.url}", "workload=quick", "server.api_key_env=MY_KEY")
        result = run_cli(tmp_path, *overrides, env=cli_env(MY_KEY=key))
        without = run_cli(tmp_path, *overrides, env=cli_env())
    assert result.returncode == 0, result.output
    finished = [run for run in mlflow_runs(tmp_path) if run.data.metrics.get("requests_failed") == 0]
    assert len(finished) == 1 and finished[0].data.metrics["requests_ok"] == 5
    # Without the variable nothing is sent as a key, and the server's refusal is what the run records.
    assert "HTTP401" in without.output
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "mlflow.db" for path in written) and any(path.name == "requests.jsonl" for path in written)
    assert [path for path in written if key.encode() in path.read_bytes()] == []
    assert key not in result.output and key not in without.output


def test_a_key_on_the_command_line_is_refused_before_anything_runs(tmp_path):
    key = "sk-sentinel-" + secrets.token_hex(16)
    result = run_cli(tmp_path, "server=openai", f"server.api_key={key}")
    assert result.returncode == 2
    assert (
        "server.api_key is not a setting: an API key is read only from the environment variable named by "
        "server.api_key_env (default OPENAI_API_KEY)" in result.stderr
    )
    assert key not in result.output and list(tmp_path.iterdir()) == []
