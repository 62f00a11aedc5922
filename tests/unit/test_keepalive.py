import math

import pytest

from sentinel_exp.serve.keepalive import (
    FOREVER,
    KeepAliveError,
    keep_alive_seconds,
    parse_go_duration,
    server_default_seconds,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (2.9, 2.0),
        (-1, FOREVER),
        (-0.5, FOREVER),
        ("5m", 300.0),
        ("0", 0.0),
        ("-1m", FOREVER),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
    ],
)
def test_keep_alive_follows_ollama(value, seconds):
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["300", "-1", "abc", "5 m", "", True, [1], float("nan")])
def test_keep_alive_rejects_what_ollama_rejects(value):
    with pytest.raises(KeepAliveError):
        keep_alive_seconds(value)


def test_go_duration_components_add_up():
    assert math.isclose(parse_go_duration("1h2m3s4ms"), 3723.004)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        ("", 300.0),
        ("5m", 300.0),
        ("30", 30.0),
        ("0", 0.0),
        ("250ms", 0.25),
        ("-1", FOREVER),
        ("-1m", FOREVER),
        ("24h", 86400.0),
    ],
)
def test_server_default_reads_like_ollama_keep_alive_env(value, seconds):
    assert server_default_seconds(value) == seconds


@pytest.mark.parametrize("value", ["1.5", "five minutes", "5 m", "m"])
def test_server_default_rejects_what_ollama_would_silently_ignore(value):
    with pytest.raises(KeepAliveError, match="invalid default keep_alive"):
        server_default_seconds(value)


def test_the_servers_default_is_ollamas_five_minutes_from_one_constant() -> None:
    from sentinel_exp.serve.engines.simulated import SimulatedEngine
    from sentinel_exp.serve.keepalive import DEFAULT_KEEP_ALIVE, DEFAULT_KEEP_ALIVE_S
    from sentinel_exp.serve.scheduler import ModelScheduler
    from sentinel_exp.serve.sim_settings import SimSettings

    assert DEFAULT_KEEP_ALIVE == "5m" and DEFAULT_KEEP_ALIVE_S == 300.0 == server_default_seconds("")
    assert ModelScheduler(SimulatedEngine(SimSettings())).default_keep_alive_s == 300.0
