"""Configuration of the reference server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "Limits", "ServerConfig"]

MAX_PAGE_SIZE = 1000
"""The largest ``page_size`` a listing accepts."""
DEFAULT_PAGE_SIZE = 100
"""The ``page_size`` of a listing that does not ask for one."""


@dataclass(frozen=True)
class Limits:
    """Configurable limits the server enforces and advertises in ``GET /api/v1/``."""

    max_request_body_bytes: int = 16 * 1024 * 1024


@dataclass
class ServerConfig:
    """How to run a :class:`~aiosdk.server.Server`.

    Every field has a default fit for the embedded server: loopback, free ports, a temporary
    data directory deleted on stop and a freshly generated admin token.
    """

    data_dir: Path | None = None
    """Where the server keeps its state; ``None`` means a temporary directory, deleted on stop."""
    database_url: str | None = None
    """A SQLAlchemy async URL; ``None`` means SQLite (aiosqlite) in ``data_dir``."""
    host: str = "127.0.0.1"
    http_port: int = 0
    """``0`` picks a free port."""
    grpc_port: int = 0
    """``0`` picks a free port."""
    admin_token: str | None = field(default=None, repr=False)
    """The admin bearer token; ``None`` generates one on the first start with a data directory."""
    log_level: str = "warning"
    limits: Limits = field(default_factory=Limits)
