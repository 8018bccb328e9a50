"""Bearer-token authentication of every gRPC call."""

from __future__ import annotations

from contextvars import ContextVar

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..auth import Principal, authenticate, parse_bearer

__all__ = ["authenticate_calls", "current_principal"]

current_principal: ContextVar[Principal] = ContextVar("aiosdk_grpc_principal")
"""The principal of the gRPC call being handled."""


def authenticate_calls(server: Server, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Require ``authorization: Bearer <token>`` metadata on every call to ``server``."""

    async def on_request(event: RecvRequest) -> None:
        authorization = event.metadata.get("authorization")
        secret = parse_bearer(authorization if isinstance(authorization, str) else None)
        if secret is None:
            raise GRPCError(Status.UNAUTHENTICATED, "Missing bearer token in authorization")
        principal = await authenticate(sessions, secret)
        if principal is None:
            raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")
        current_principal.set(principal)

    listen(server, RecvRequest, on_request)
