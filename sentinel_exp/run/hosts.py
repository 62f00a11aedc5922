"""Which machine a run describes: the client that measures (this one) and the target it measures
(the host of the server URL). With a remote target the two differ, and this machine's environment
fingerprint (CPU, RAM, GPUs) describes the client only; the tags here say so, so that a run
against a GPU box is never read as a run on this machine's hardware.

A target counts as this machine only at a loopback URL, as for telemetry: a URL naming this
machine by another name is taken as remote, which at worst leaves out facts, never misplaces them.
"""

from __future__ import annotations

import socket
import sys

from sentinel_exp import tags as tag
from sentinel_exp.urls import is_loopback_url, url_host


class FingerprintOf:
    """`sentinel.fingerprint_of`: whose machine the environment fingerprint tags describe."""

    CLIENT_AND_TARGET = "client,target"  # the target is on this machine: one host, both roles
    CLIENT = "client"  # the target is another host: the fingerprint is the client's only


def client_host() -> str:
    return socket.gethostname()


def target_host(url: str) -> str:
    """The target's host: the client's own name for a loopback URL (one machine has one name in
    every run against it, whatever the URL spells), else the host the URL names."""
    return client_host() if is_loopback_url(url) else url_host(url)


def host_tags(url: str) -> dict[str, str]:
    """The run's hosts as tags: the client, the target, and whose machine the fingerprint is."""
    remote = not is_loopback_url(url)
    return {
        tag.CLIENT_HOST: client_host(),
        tag.TARGET_HOST: target_host(url),
        tag.TARGET: url,
        tag.TARGET_REMOTE: str(remote).lower(),
        tag.FINGERPRINT_OF: FingerprintOf.CLIENT if remote else FingerprintOf.CLIENT_AND_TARGET,
        tag.FINGERPRINT_HOST: client_host(),
        **ray_node_tags(),
    }


def ray_node_tags() -> dict[str, str]:
    """`sentinel.ray_node_id`: the Ray node that ran this run, when it ran as a Ray task
    (hydra/launcher=sentinel_ray). Several nodes may share a host name; the node id tells them
    apart. Ray is read only where this process has imported and initialised it already: importing
    it costs seconds, and a run elsewhere has no node to name."""
    ray = sys.modules.get("ray")
    if ray is None or not bool(ray.is_initialized()):
        return {}
    return {tag.RAY_NODE_ID: str(ray.get_runtime_context().get_node_id())}
