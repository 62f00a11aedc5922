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


def url_host(url: str) -> str:
    """The host a URL names, without port or brackets ("" for none)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def has_credentials(url: str) -> bool:
    """True when `url` carries a user name or password (`http://user:pass@host`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return "://" in url and (parts.username is not None or parts.password is not None)


def credentials_problem(url: str, source: str) -> str | None:
    """Why a tracking URI with credentials in it is refused (None when it has none). MLflow reads a
    tracking server's user and password from the environment, the one place they stay out of
    params, config.yaml, run.json, Hydra's .hydra/ and the console."""
    if not has_credentials(url):
        return None
    return (
        f"{source} carries a user name or password (user:pass@host): MLflow credentials are read only "
        f"from the environment, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
        f"MLFLOW_TRACKING_TOKEN), so they are never written to the run's files, MLflow or the console; "
        f"give the URI without them"
    )


# The schemes MLflow has a tracking store for (mlflow.tracking._tracking_service.utils, the store
# registry; "" is a local path, databases may name a driver: postgresql+psycopg://).
TRACKING_SCHEMES = frozenset(
    {"", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc"}
)


def tracking_scheme(uri: str) -> str:
    """The store kind a tracking URI names, as MLflow reads it (`postgresql+psycopg` is postgresql)."""
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return "?"
    if len(scheme) == 1:  # a Windows drive letter: a local path
        return ""
    return scheme.split("+", 1)[0]


def tracking_uri_problem(uri: str, source: str) -> str | None:
    """Why MLflow cannot log to `uri` at all (None when it can try): refused before measuring, as
    no later upload or sync could ever reach such a store."""
    scheme = tracking_scheme(uri)
    if scheme in TRACKING_SCHEMES:
        return None
    return (
        f"{source}={uri!r} is no store MLflow can log to; give sqlite:///path/mlflow.db (a local store), "
        f"http(s)://host:port (a tracking server) or a database URL (postgresql://, mysql://, mssql://)"
    )
