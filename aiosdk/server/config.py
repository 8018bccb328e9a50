"""Configuration of the reference server."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog.state import Validator
    from .tickets.apps import Application

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AccountSettings",
    "ChannelSettings",
    "Limits",
    "ServerConfig",
    "TicketSettings",
]

MAX_PAGE_SIZE = 1000
"""The largest ``page_size`` a listing accepts."""
DEFAULT_PAGE_SIZE = 100
"""The ``page_size`` of a listing that does not ask for one."""


@dataclass(frozen=True)
class Limits:
    """The limits a public server needs, on by default; the sizes are advertised in
    ``GET /api/v1/``.

    Raises :class:`ValueError` for a limit that is not a positive number.
    """

    max_request_body_bytes: int = 16 * 1024 * 1024
    """The largest HTTP request body; a larger one is answered 413."""
    max_data_body_bytes: int = 512 * 1024 * 1024
    """The largest request body of the data routes (under ``/api/v1/array/``, ``/table/``,
    ``/sparse/``: a block, a partition); a larger one is answered 413."""
    max_header_bytes: int = 64 * 1024
    """The most bytes an HTTP request's line and header fields may take; more is answered 431."""
    max_grpc_message_bytes: int = 4 * 1024 * 1024
    """The largest gRPC request message (grpcio's default); a larger one is refused with
    ``RESOURCE_EXHAUSTED`` before it is read."""
    max_connections: int | None = None
    """Open client connections allowed on each of the HTTP and gRPC ports; past it, a new
    HTTP connection is answered 503 and a new gRPC connection gets a GOAWAY. ``None``: a
    quarter of the process's file descriptor limit each (at most 1024), so that the two
    ports together never run the process out of descriptors."""
    header_timeout_seconds: float = 10.0
    """How long a client has to send a complete HTTP request head (from the connection or its
    first byte), or, on gRPC, its first request; then the connection is closed."""
    http_idle_timeout_seconds: float = 5.0
    """How long an HTTP connection may stay open between requests (keep-alive), and a request
    body may stall, before the server closes the connection."""
    grpc_idle_timeout_seconds: float = 300.0
    """How long a gRPC connection may stay open without a call before the server closes it
    with a GOAWAY (clients reconnect on their next call)."""

    def __post_init__(self) -> None:
        for limit in dataclasses.fields(self):
            value = getattr(self, limit.name)
            if value is None and limit.name == "max_connections":
                continue
            whole = limit.name.startswith("max_")  # counts; the others are seconds
            if (
                isinstance(value, bool)
                or not isinstance(value, int if whole else int | float)
                or not value > 0
                or not math.isfinite(value)
            ):
                kind = "whole number" if whole else "number"
                raise ValueError(f"Limits.{limit.name} must be a positive {kind}, not {value!r}")


def _check_positive(settings: object, names: Sequence[str]) -> None:
    """:class:`ValueError` unless each of ``names`` of ``settings`` is a positive, finite
    number."""
    for name in names:
        value = getattr(settings, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"{type(settings).__name__}.{name} must be a positive number, not {value!r}"
            )


@dataclass(frozen=True)
class AccountSettings:
    """Lifetimes of login sessions and limits on login attempts."""

    access_token_ttl: float = 900.0
    """Seconds a session's access token lives; a refresh hands out the next one."""
    session_ttl: float = 30 * 24 * 3600.0
    """Seconds a login session lives at most, refreshes included."""
    login_failures_per_account: int = 5
    """Failed logins per account per window before it answers 429."""
    login_failures_per_address: int = 30
    """Failed logins per client address per window before it answers 429."""
    login_window_seconds: float = 60.0
    allow_anonymous: bool = False
    """Whether requests without credentials may read public assets."""

    def __post_init__(self) -> None:
        _check_positive(self, ("access_token_ttl", "session_ttl", "login_window_seconds"))
        for name in ("login_failures_per_account", "login_failures_per_address"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"AccountSettings.{name} must be a positive whole number, not {value!r}"
                )


@dataclass(frozen=True)
class TicketSettings:
    """Lifetimes of ticket sessions (gRPC ``SessionService``) and how often expired ones go.

    Raises :class:`ValueError` for a value that is not a positive number, or a default above
    the maximum.
    """

    session_ttl: float = 300.0
    """Seconds a ticket session lives without a refresh when its opener names no ttl."""
    max_session_ttl: float = 86400.0
    """The longest ttl a ticket session may have (a day at most); a larger request is granted
    this."""
    sweep_interval: float = 2.0
    """Seconds between two sweeps releasing what expired sessions exported (an expired
    session is treated as closed wherever it is looked at, sweep or not)."""

    def __post_init__(self) -> None:
        _check_positive(self, ("session_ttl", "max_session_ttl", "sweep_interval"))
        if self.max_session_ttl > 86400:  # (the registry's MAX_TTL_SECONDS)
            raise ValueError(
                f"TicketSettings.max_session_ttl is at most 86400 (a day), not"
                f" {self.max_session_ttl}"
            )
        if self.session_ttl > self.max_session_ttl:
            raise ValueError(
                f"TicketSettings.session_ttl ({self.session_ttl}) is above max_session_ttl"
                f" ({self.max_session_ttl})"
            )


@dataclass(frozen=True)
class ChannelSettings:
    """Channels (gRPC ``ChannelService``): queue bounds, presence timing, Listen streams.

    Raises :class:`ValueError` for a value that is not a positive number, or a default above
    the maximum.
    """

    max_queue: int = 1000
    """Pending messages a channel holds at most; a send to a full one is ``RESOURCE_EXHAUSTED``."""
    grace: float = 10.0
    """Seconds after which a channel whose holder went silent (a dropped Listen stream, a
    ConnectChannel not refreshed) is disconnected (an unclean disconnect event)."""
    heartbeat: float = 15.0
    """Seconds of silence after which a Listen stream gets a heartbeat."""
    window: int = 256
    """Messages in flight (sent, not yet acknowledged) on a Listen stream that asks for no
    window."""
    max_window: int = 4096
    """The largest window a Listen stream may ask for (a larger one gets this)."""
    sweep_interval: float = 1.0
    """Seconds between two sweeps (silent channels disconnected, expired ones and old events
    removed)."""
    default_duration_minutes: int = 120
    """How long a channel token lives when CreateChannel names no duration."""
    max_duration_minutes: int = 1440
    """The longest duration CreateChannel accepts (a day at most)."""
    events_retention: float = 3600.0
    """Seconds presence events are kept (a Presence stream resumes within them)."""

    def __post_init__(self) -> None:
        _check_positive(
            self,
            (
                "max_queue",
                "grace",
                "heartbeat",
                "window",
                "max_window",
                "sweep_interval",
                "default_duration_minutes",
                "max_duration_minutes",
                "events_retention",
            ),
        )
        for name in (
            "max_queue",
            "window",
            "max_window",
            "default_duration_minutes",
            "max_duration_minutes",
        ):
            if not isinstance(getattr(self, name), int):
                raise ValueError(  # noqa: TRY004  # (as every other setting's refusal)
                    f"ChannelSettings.{name} must be a whole number, not {getattr(self, name)!r}"
                )
        if self.max_duration_minutes > 1440:
            raise ValueError(
                "ChannelSettings.max_duration_minutes is at most 1440 (a day), not"
                f" {self.max_duration_minutes}"
            )
        if self.default_duration_minutes > self.max_duration_minutes:
            raise ValueError(
                f"ChannelSettings.default_duration_minutes ({self.default_duration_minutes}) is"
                f" above max_duration_minutes ({self.max_duration_minutes})"
            )
        if self.window > self.max_window:
            raise ValueError(
                f"ChannelSettings.window ({self.window}) is above max_window ({self.max_window})"
            )


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
    accounts: AccountSettings = field(default_factory=AccountSettings)
    tls_cert: Path | None = None
    """A PEM certificate chain: serve HTTPS and gRPC over TLS (with ``tls_key``)."""
    tls_key: Path | None = None
    """The PEM private key of ``tls_cert``."""
    keyring_file: Path | None = None
    """The server's secret keys, for several processes that must trust each other (see
    :mod:`aiosdk.server.keyring`); ``None``: ``$AIOSDK_KEYRING`` if set, else
    ``keyring.json`` in ``data_dir``, generated on the first start."""
    spec_validators: Mapping[str, Validator] = field(default_factory=dict)
    """Spec name -> a validator run on every create and metadata update of a node that has the
    spec: called with the metadata, the structure family and the specs, it raises
    :class:`ValueError` with the reason to refuse the node (answered 422)."""
    tickets: TicketSettings = field(default_factory=TicketSettings)
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    applications: Sequence[str | Application] = ()
    """Applications served besides the built-in ones (see :mod:`aiosdk.server.tickets.apps`):
    each an :class:`~aiosdk.server.tickets.apps.Application`, or a ``"module:factory"`` spec
    imported at start (``factory()`` returns the application)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate (tls_cert) and its key (tls_key)")

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS (HTTPS, and gRPC over TLS)."""
        return self.tls_cert is not None
