"""Ollama's keep_alive semantics as pure functions.

A number is whole seconds; a string is a Go duration ("5m", "1h30m", "0", "-1m"); anything
negative means "keep forever". As in Ollama (api/types.go, Duration.UnmarshalJSON), strings go
through time.ParseDuration alone, so "300" or "-1" as strings are rejected (HTTP 400).
"""

from __future__ import annotations

import math
import re
from typing import Any

FOREVER = math.inf

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_COMPONENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class KeepAliveError(ValueError):
    """The keep_alive value is neither a number nor a Go duration."""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; raises KeepAliveError like time.ParseDuration fails."""
    raw = text.strip()
    sign = 1.0
    if raw[:1] in ("+", "-"):
        sign = -1.0 if raw[0] == "-" else 1.0
        raw = raw[1:]
    if raw == "0":
        return 0.0
    if not raw:
        raise KeepAliveError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(raw):
        match = _COMPONENT.match(raw, pos)
        if match is None:
            raise KeepAliveError(
                f"invalid duration {text!r} (a Go duration such as '5m', '30s', '-1m'; or a number of seconds)"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds to keep a model loaded after a request: None = not given, inf = forever."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise KeepAliveError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise KeepAliveError(f"invalid keep_alive {value!r}: use seconds, -1 for forever, or a duration like '5m'")
        seconds = float(int(value)) if value >= 0 else -1.0
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise KeepAliveError(f"invalid keep_alive {value!r}: use seconds or a duration like '5m'")
    return FOREVER if seconds < 0 else seconds


# Ollama's default keep_alive (envconfig.KeepAlive), as OLLAMA_KEEP_ALIVE would spell it.
DEFAULT_KEEP_ALIVE = "5m"


def server_default_seconds(text: str | None) -> float:
    """A server's default keep_alive as Ollama reads OLLAMA_KEEP_ALIVE (envconfig.KeepAlive):
    a Go duration or whole seconds, negative = forever; unset = 5 minutes. Ollama ignores a
    value it cannot read; here it is an error, so a typo cannot pass silently."""
    raw = (text or "").strip() or DEFAULT_KEEP_ALIVE
    try:
        seconds = parse_go_duration(raw)
    except KeepAliveError:
        try:
            seconds = float(int(raw))
        except ValueError:
            raise KeepAliveError(
                f"invalid default keep_alive {text!r} (a Go duration such as '5m' or "
                f"'30s', or whole seconds; negative = forever)"
            ) from None
    return FOREVER if seconds < 0 else seconds


DEFAULT_KEEP_ALIVE_S = server_default_seconds(None)
