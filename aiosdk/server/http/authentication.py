"""Authentication of every HTTP request: a bearer token, or Basic credentials; and the one rule
of read-only tokens."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..accounts.ratelimit import client_address
from ..auth import ANONYMOUS, Principal, parse_basic, parse_bearer
from ..authenticator import Authenticator
from ..errors import PermissionDeniedError, UnauthenticatedError

__all__ = ["READ_METHODS", "AuthenticationMiddleware"]

READ_METHODS = frozenset({"GET", "HEAD"})
"""The methods a read-only token may use (besides logging out)."""


class AuthenticationMiddleware:
    """Requires a valid bearer token, or Basic credentials (``no_session`` logins), on every
    path except ``public_paths``; at ``optional_paths`` a request without an ``Authorization``
    header is made by :data:`~aiosdk.server.auth.ANONYMOUS` (one with it is checked as anywhere).

    The principal is put in the request state for the routes and the idempotency layer. A
    read-scoped principal may only make GET (and HEAD) requests, and the ones at
    ``always_allowed`` (``(method, path)``: logging out); anything else is answered 403 here.
    Wrong Basic credentials count as failed logins, and while the account or the address has
    too many of those the answer is 429 (see :mod:`~aiosdk.server.accounts.ratelimit`).
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_paths: Collection[str],
        optional_paths: Collection[str] = (),
        always_allowed: Collection[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = frozenset(public_paths)
        self.optional_paths = frozenset(optional_paths)
        self.always_allowed = frozenset(always_allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public_paths:
            principal = await self._authenticate(scope)
            if (
                principal.read_only
                and scope["method"] not in READ_METHODS
                and (scope["method"], scope["path"]) not in self.always_allowed
            ):
                raise PermissionDeniedError("The token is read-only: it may only read")
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal:
        authorization = Headers(scope=scope).get("authorization")
        if authorization is None and scope["path"] in self.optional_paths:
            return ANONYMOUS
        secret = parse_bearer(authorization)
        if secret is not None:
            principal = await self.authenticator.authenticate(secret)
            if principal is None:
                raise UnauthenticatedError("Invalid, expired or revoked token")
            return principal
        basic = parse_basic(authorization)
        if basic is None:
            raise UnauthenticatedError(
                "Missing bearer token (or Basic credentials) in the Authorization header"
            )
        client = scope.get("client")
        address = client_address(client[0] if client else None)
        principal = await self.authenticator.authenticate_basic(*basic, address=address)
        if principal is None:
            raise UnauthenticatedError("Invalid credentials")
        return principal
