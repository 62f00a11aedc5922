"""Facts about a server URL that several parts of the runner need, decided in one place."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_url(url: str) -> bool:
    """True when `url` (http or https) names this machine's loopback: 127.0.0.0/8, ::1, localhost."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
