"""Server addresses: OLLAMA_HOST as Ollama reads it, server.url with or without a scheme."""

from __future__ import annotations

import pytest

from sentinel_exp.errors import ConfigError
from sentinel_exp.run.servers import normalize_url, ollama_url_from_env
from sentinel_exp.urls import tracking_scheme, tracking_uri_problem


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        (":11500", "http://127.0.0.1:11500"),
        ("'gpu-box:11434'", "http://gpu-box:11434"),  # Ollama strips quotes
        ("http://gpu-box", "http://gpu-box"),  # a scheme without a port: its own port, 80
        ("https://gpu-box", "https://gpu-box"),
        ("http://gpu-box:8080/ollama", "http://gpu-box:8080/ollama"),
        ("[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(value: str, url: str) -> None:
    assert ollama_url_from_env({"OLLAMA_HOST": value}) == url


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1:11577", "http://127.0.0.1:11577"),
        ("localhost", "http://localhost:11434"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://proxy.example/ollama/", "https://proxy.example/ollama"),  # a scheme keeps its own port
    ],
)
def test_server_url_gets_a_scheme_and_keeps_its_path(value: str, url: str) -> None:
    assert normalize_url(value, "server.url") == url


@pytest.mark.parametrize("value", ["http://[bad", "ftp://host:21", "host:notaport", "host:99999"])
def test_an_unusable_address_is_a_config_error_naming_its_source(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^OLLAMA_HOST is not a valid host or URL"):
        ollama_url_from_env({"OLLAMA_HOST": value})


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("sqlite:///mlflow.db", "sqlite"),
        ("http://127.0.0.1:5000", "http"),
        ("postgresql+psycopg://u@h/db", "postgresql"),
        ("./mlruns", ""),
        ("C:/runs", ""),
        ("ftp://x", "ftp"),
    ],
)
def test_a_tracking_uri_names_its_store_as_mlflow_reads_it(uri, scheme):
    assert tracking_scheme(uri) == scheme
    assert (tracking_uri_problem(uri, "tracking.uri") is None) == (scheme != "ftp")
