"""Streaming clients: one request in, one RequestRecord out, through one WireApi per wire API."""

from sentinel_exp.clients.base import Prompt, PromptParts, WireApi
from sentinel_exp.clients.common import RequestSpec, send_request
from sentinel_exp.clients.facts import ModelFacts
from sentinel_exp.clients.registry import WIRE_APIS, RunApis, run_apis, unsent_warning, wire_api

__all__ = [
    "WIRE_APIS",
    "ModelFacts",
    "Prompt",
    "PromptParts",
    "RequestSpec",
    "RunApis",
    "WireApi",
    "run_apis",
    "send_request",
    "unsent_warning",
    "wire_api",
]
