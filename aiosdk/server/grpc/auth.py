"""Bearer-token authentication of every gRPC call, and what the handlers know of the call."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server

from ..auth import Principal, parse_bearer
from ..authenticator import Authenticator

__all__ = ["IDEMPOTENCY_KEY", "Call", "authenticate_calls", "current_call"]

IDEMPOTENCY_KEY = "idempotency-key"
"""The metadata entry that makes a repeat of a mutating call a replay."""


@dataclass(frozen=True)
class Call:
    """The gRPC call being handled: who makes it, to which method, under which key."""

    principal: Principal
    method: str
    idempotency_key: str | None


current_call: ContextVar[Call] = ContextVar("aiosdk_grpc_call")
"""The call being handled (grpclib runs a call's listeners and handler in one task)."""


def authenticate_calls(server: Server, authenticator: Authenticator) -> None:
    """Require ``authorization: Bearer <token>`` metadata on every call to ``server``."""

    async def on_request(event: RecvRequest) -> None:
        authorization = event.metadata.get("authorization")
        secret = parse_bearer(authorization if isinstance(authorization, str) else None)
        if secret is None:
            raise GRPCError(Status.UNAUTHENTICATED, "Missing bearer token in authorization")
        principal = await authenticator.authenticate(secret)
        if principal is None:
            raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")
        key = event.metadata.get(IDEMPOTENCY_KEY)
        current_call.set(Call(principal, event.method_name, key if isinstance(key, str) else None))

    listen(server, RecvRequest, on_request)
