"""Authentication of every gRPC call (a bearer token, or Basic credentials, as on HTTP), and
what the handlers know of the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server

from ..accounts.ratelimit import LoginRateLimitedError, client_address
from ..auth import ANONYMOUS, Principal, parse_basic, parse_bearer
from ..authenticator import Authenticator

__all__ = [
    "IDEMPOTENCY_KEY",
    "TOKEN_HOLDER_METHODS",
    "Call",
    "authenticate_calls",
    "current_call",
]

IDEMPOTENCY_KEY = "idempotency-key"
"""The metadata entry that makes a repeat of a mutating call a replay."""


TOKEN_HOLDER_METHODS = frozenset(
    f"/aiosdk.v1.ChannelService/{name}"
    for name in (
        "InspectToken",
        "GetMessages",
        "HasMessages",
        "PopMessage",
        "ClearMessages",
        "ConnectChannel",
        "DisconnectChannel",
        "Listen",
    )
)
"""The calls whose request carries their credential (a channel token): they need no
authorization metadata (one sent is checked as on any call)."""


async def _always() -> bool:
    return True


@dataclass(frozen=True)
class Call:
    """The gRPC call being handled: who makes it, to which method, under which key."""

    principal: Principal
    method: str
    idempotency_key: str | None
    still_valid: Callable[[], Awaitable[bool]] = field(repr=False)
    """Whether the call's credentials still authenticate (a stream asks between messages, so
    that a logout or a revocation also ends the streams opened before it)."""


current_call: ContextVar[Call] = ContextVar("aiosdk_grpc_call")
"""The call being handled (grpclib runs a call's listeners and handler in one task)."""


def authenticate_calls(server: Server, authenticator: Authenticator) -> None:
    """Require ``authorization: Bearer <token>`` (or ``Basic <base64(user:password)>``) metadata
    on every call to ``server``: ``UNAUTHENTICATED`` otherwise, and ``RESOURCE_EXHAUSTED`` for
    Basic credentials while their account or the caller's address has too many failed logins."""

    async def on_request(event: RecvRequest) -> None:
        authorization = event.metadata.get("authorization")
        value = authorization if isinstance(authorization, str) else None
        key = event.metadata.get(IDEMPOTENCY_KEY)
        if authorization is None and event.method_name in TOKEN_HOLDER_METHODS:
            current_call.set(
                Call(ANONYMOUS, event.method_name, key if isinstance(key, str) else None, _always)
            )
            return
        secret = parse_bearer(value)
        principal: Principal | None
        if secret is not None:
            bearer = secret
            principal = await authenticator.authenticate(bearer)
            if principal is None:
                raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")

            async def still_valid() -> bool:
                return await authenticator.authenticate(bearer) is not None

        else:
            basic = parse_basic(value)
            if basic is None:
                raise GRPCError(Status.UNAUTHENTICATED, "Missing bearer token in authorization")
            peer = event.peer.addr()
            address = client_address(str(peer[0]) if peer else None)
            try:
                principal = await authenticator.authenticate_basic(*basic, address=address)
            except LoginRateLimitedError as exc:
                raise GRPCError(Status.RESOURCE_EXHAUSTED, exc.message) from None
            if principal is None:
                raise GRPCError(Status.UNAUTHENTICATED, "Invalid credentials")
            credentials = basic

            async def still_valid() -> bool:
                try:
                    checked = await authenticator.authenticate_basic(*credentials, address=address)
                except LoginRateLimitedError:
                    return False
                return checked is not None

        current_call.set(
            Call(
                principal,
                event.method_name,
                key if isinstance(key, str) else None,
                still_valid,
            )
        )

    listen(server, RecvRequest, on_request)
