"""Bearer-token authentication of every HTTP request."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import parse_bearer
from ..authenticator import Authenticator
from ..errors import UnauthenticatedError

__all__ = ["AuthenticationMiddleware"]


class AuthenticationMiddleware:
    """Requires a valid bearer token on every path except ``public_paths``.

    The principal is put in the request state for the routes and the idempotency layer.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_paths: Collection[str],
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public_paths:
            secret = parse_bearer(Headers(scope=scope).get("authorization"))
            if secret is None:
                raise UnauthenticatedError("Missing bearer token in the Authorization header")
            principal = await self.authenticator.authenticate(secret)
            if principal is None:
                raise UnauthenticatedError("Invalid, expired or revoked token")
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
