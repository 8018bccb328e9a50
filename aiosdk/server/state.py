"""State shared by the HTTP app and the gRPC services of one running server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .authenticator import Authenticator
from .authorization import Callers
from .catalog.state import CatalogState, Wakeups
from .channels.hub import ChannelHub
from .config import AccountSettings, ChannelSettings, Limits, TicketSettings
from .data.store import BlobStore
from .keyring import Keyring
from .objects.store import ObjectFiles

if TYPE_CHECKING:
    from .tickets.apps import Applications

__all__ = ["ChannelState", "Metrics", "ServerState", "TicketState"]


@dataclass
class Metrics:
    """Counters reported by the status service."""

    started_at: float = field(default_factory=time.monotonic)
    requests_served: int = 0
    """HTTP requests and gRPC calls completed."""
    active_streams: int = 0
    """gRPC server-streaming calls running now."""

    @property
    def uptime_seconds(self) -> float:
        """Seconds since the server started."""
        return time.monotonic() - self.started_at


def _builtin_applications() -> Applications:
    # (the applications bring pyarrow and numpy: imported when a state is made, not with this)
    from .tickets.apps import Applications, builtin_applications

    return Applications(builtin_applications())


@dataclass
class TicketState:
    """The ticket sessions' part of the server's state (see :mod:`aiosdk.server.tickets`)."""

    applications: Applications = field(default_factory=_builtin_applications)
    """The applications whose fields application tickets name (the built-in ones and those the
    server was started with)."""
    settings: TicketSettings = field(default_factory=TicketSettings)
    """The sessions' ttl default and maximum, the sweep's interval."""
    computing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    """Views and application fields computed at once, at most (each may hold up to
    :data:`~aiosdk.server.tickets.views.MAX_VIEW_BYTES` in memory): the others wait."""
    releases: Wakeups = field(default_factory=Wakeups)
    """Wakes, in this process, the subscriptions to a session's exports once a release of one
    of them (or the session's end) commits: ``releases.wake(work, session_id)``. Subscriptions
    look anyway every few seconds (what another process, or the expiry sweep, released)."""


@dataclass
class ChannelState:
    """The channels' part of the server's state (see :mod:`aiosdk.server.channels`)."""

    settings: ChannelSettings = field(default_factory=ChannelSettings)
    """Queue bounds, presence timing, Listen windows and heartbeats."""
    hub: ChannelHub = field(default_factory=ChannelHub)
    """This process's Listen and Presence streams and their wake-ups (a state made without
    one reaches no other process)."""


@dataclass
class ServerState:
    """Everything a request handler needs: storage, keys, limits, addresses and counters."""

    sessions: async_sessionmaker[AsyncSession]
    authenticator: Authenticator
    grpc_host: str
    grpc_port: int
    grpc_tls: bool = False
    limits: Limits = field(default_factory=Limits)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    metrics: Metrics = field(default_factory=Metrics)
    keyring: Keyring = field(default_factory=Keyring.generate)
    """The server's secret keys: sign and verify what the server hands out (see
    :mod:`aiosdk.server.keyring`). A state made without one gets a fresh keyring of its own."""
    callers: Callers = field(default_factory=Callers)
    """Who each request's caller is and what it may do where (see
    :mod:`aiosdk.server.authorization`). A state made without one caches nothing."""
    catalog: CatalogState = field(default_factory=CatalogState)
    """The catalog's watchers and spec validators (see :mod:`aiosdk.server.catalog.state`)."""
    blobs: BlobStore = field(default_factory=BlobStore.in_memory)
    """The bytes of the data nodes (see :mod:`aiosdk.server.data.store`). A state made without
    one keeps them in memory."""
    tickets: TicketState = field(default_factory=TicketState)
    """Ticket sessions: applications, lifetimes, release wake-ups (see :class:`TicketState`)."""
    channels: ChannelState = field(default_factory=ChannelState)
    """Channels: settings, this process's streams (see :class:`ChannelState`)."""
    objects: ObjectFiles = field(default_factory=lambda: ObjectFiles(None))
    """The object store's files (see :mod:`aiosdk.server.objects.store`). A state made without
    a directory keeps no objects."""
