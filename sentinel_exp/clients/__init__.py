"""Streaming clients: one request in, one RequestRecord out."""

from sentinel_exp.clients.common import RequestSpec, send_request

__all__ = ["RequestSpec", "send_request"]
