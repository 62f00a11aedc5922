"""Which machine a run describes: the client, the target at the server URL, and whose machine the
environment fingerprint is; and a tracking URI that would carry a password, refused."""

from __future__ import annotations

import socket
import sys

import pytest
from support.compose import variant

from sentinel_exp.checks.hardware import unchecked_remote
from sentinel_exp.cli.app import config_dir
from sentinel_exp.cli.overrides import command_line_overrides, override_problems
from sentinel_exp.config.schema import ExperimentConfig, typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.run.hosts import FingerprintOf, host_tags, target_host
from sentinel_exp.urls import credentials_problem, has_credentials, url_host


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://gpu-box:11434", "gpu-box"),
        ("https://GPU-Box.lab.example/ollama", "gpu-box.lab.example"),  # host names are case-blind
        ("http://[fe80::1]:11434", "fe80::1"),
        ("http://10.0.0.7", "10.0.0.7"),
        ("not a url", ""),
    ],
)
def test_the_host_of_a_url_leaves_out_port_path_and_brackets(url: str, host: str) -> None:
    assert url_host(url) == host


def test_a_remote_target_is_tagged_apart_from_the_client_whose_fingerprint_it_is() -> None:
    tags = host_tags("http://gpu-box:11434")
    assert tags == {
        "sentinel.client_host": socket.gethostname(),
        "sentinel.target_host": "gpu-box",
        "sentinel.target": "http://gpu-box:11434",
        "sentinel.target_remote": "true",
        # This machine's CPU, RAM and GPUs are the client's: never read as the GPU box's.
        "sentinel.fingerprint_of": FingerprintOf.CLIENT,
        "sentinel.fingerprint_host": socket.gethostname(),
    }


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434", "http://localhost:8080", "http://[::1]:9000"])
def test_a_loopback_target_is_this_machine_under_its_one_name(url: str) -> None:
    tags = host_tags(url)
    assert target_host(url) == socket.gethostname() == tags["sentinel.target_host"] == tags["sentinel.client_host"]
    assert tags["sentinel.fingerprint_of"] == "client,target" and tags["sentinel.target_remote"] == "false"


def test_a_hardware_profile_for_a_remote_target_is_left_unchecked_not_failed() -> None:
    profile = typed_config(variant("hardware=rtx3060_12gb")).hardware
    check = unchecked_remote(profile, "http://gpu-box:11434")
    assert check.matches and check.tags["sentinel.hardware_match"] == "unchecked"
    assert check.tags["sentinel.hardware_profile"] == "rtx3060_12gb"
    assert "http://gpu-box:11434, another host: not checked against this client's GPUs" in check.message


@pytest.mark.parametrize(
    ("url", "carries"),
    [
        ("http://alice:secret@mlflow-box:5000", True),
        ("https://token@mlflow-box", True),  # a user name alone: a token in the user field
        ("http://mlflow-box:5000", False),
        ("sqlite:///mlflow.db", False),
        ("sqlite:////srv/at@sign/mlflow.db", False),  # an @ in a path is no credential
    ],
)
def test_credentials_in_a_url_are_found(url: str, carries: bool) -> None:
    assert has_credentials(url) is carries


def test_a_tracking_uri_with_a_password_is_refused_before_hydra_writes_it_anywhere() -> None:
    # On the command line: before Hydra composes (and writes its .hydra/overrides.yaml).
    found = override_problems(
        command_line_overrides(["tracking.uri=http://alice:secret@mlflow-box:5000"]), config_dir()
    )
    assert len(found) == 1 and "secret" not in found[0]
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in found[0]
    # From a config file or $MLFLOW_TRACKING_URI: the typed config refuses it (exit 2).
    with pytest.raises(ConfigError, match=r"tracking\.uri carries a user name or password") as refused:
        typed_config(variant("tracking.uri=http://alice:secret@mlflow-box:5000"))
    assert "secret" not in str(refused.value)
    assert credentials_problem("http://mlflow-box:5000", "tracking.uri") is None


def test_tracking_server_reads_the_uri_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-box:5000")
    cfg = typed_config(variant("tracking=server"))
    assert isinstance(cfg, ExperimentConfig) and cfg.tracking.uri == "http://mlflow-box:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert typed_config(variant("tracking=server")).tracking.uri == "http://127.0.0.1:5000"


def test_a_run_outside_ray_names_no_ray_node_and_never_imports_ray() -> None:
    # Importing Ray costs seconds: the node id is read only where the process has initialised Ray
    # already (a job of hydra/launcher=sentinel_ray; tests/integration/test_cluster_ray.py).
    assert "ray" not in sys.modules
    assert "sentinel.ray_node_id" not in host_tags("http://127.0.0.1:11434")
    assert "ray" not in sys.modules
