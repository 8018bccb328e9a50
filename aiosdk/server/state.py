"""State shared by the HTTP app and the gRPC services of one running server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .authenticator import Authenticator
from .authorization import Callers
from .catalog.state import CatalogState
from .config import AccountSettings, Limits
from .data.store import BlobStore
from .keyring import Keyring

__all__ = ["Metrics", "ServerState"]


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
