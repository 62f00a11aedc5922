"""The httpx client of a run: preflight, placement and unload, and the streamed requests to a server
off this machine (requests to a loopback server go through http1.LoopbackClient)."""

from __future__ import annotations

import httpx

from sentinel_exp.urls import is_loopback_url


def measuring_client(
    url: str, concurrency: int, read_timeout_s: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """A connection per in-flight request; to a loopback server no proxies from the environment
    (they would sit inside every measured interval)."""
    connections = max(1, concurrency)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    loopback = is_loopback_url(url)
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(connect=10.0, read=read_timeout_s, write=30.0, pool=None),
        limits=limits,
        headers=headers,
        trust_env=not loopback,
    )
