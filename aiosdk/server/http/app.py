"""The FastAPI application of the HTTP API."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ..._version import __version__
from ..idempotency import IdempotencyStore
from ..state import ServerState
from .authentication import AuthenticationMiddleware
from .errors import install_error_handlers
from .idempotency import IdempotencyMiddleware
from .middleware import (
    BodySizeLimitMiddleware,
    HeadMiddleware,
    RequestContextMiddleware,
    RequestTargetMiddleware,
    UnservedMutationMiddleware,
)
from .openapi import describe_layers
from .routes import API_PREFIX, auth, include_routes

__all__ = ["OPENAPI_URL", "create_app"]

OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_URL = f"{API_PREFIX}/docs"
_LOGIN_PATHS = frozenset(API_PREFIX + path for path in auth.PUBLIC_PATHS)
_LOGOUT = ("POST", f"{API_PREFIX}/auth/logout")
_OPTIONAL_PATHS = frozenset({f"{API_PREFIX}/"})
"""Where a request without credentials is the anonymous caller's: the server's information (a
channel token holder has no login, yet must find the gRPC endpoint)."""


class _Api(FastAPI):
    """FastAPI, with the layers around the routes described in its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            describe_layers(document, _LOGIN_PATHS, _OPTIONAL_PATHS)
            self.openapi_schema = document
        return self.openapi_schema


def create_app(state: ServerState) -> FastAPI:
    """The HTTP API of a server with ``state``.

    Layers, outermost first: request id, logging and counting; HEAD as GET; body-size limit;
    authentication by bearer token or Basic credentials (all but the OpenAPI document, its docs
    page, logging in and refreshing a session), so that a stranger learns nothing more about a
    request than 401, and read-only tokens stopped at any change but logging out;
    request-target check (no NUL characters); 404/405 for mutating requests no route serves;
    idempotency; routes.
    """
    app = _Api(
        title="aiosdk",
        version=__version__,
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.server = state
    install_error_handlers(app)
    include_routes(app)
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(IdempotencyMiddleware, store=IdempotencyStore(state.sessions, state.keyring))
    app.add_middleware(UnservedMutationMiddleware, routes=app.router.routes)
    app.add_middleware(RequestTargetMiddleware)
    app.add_middleware(
        AuthenticationMiddleware,
        authenticator=state.authenticator,
        public_paths={OPENAPI_URL, DOCS_URL, *_LOGIN_PATHS},
        optional_paths=_OPTIONAL_PATHS,
        always_allowed={_LOGOUT},
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=state.limits.max_request_body_bytes,
        data_max_bytes=state.limits.max_data_body_bytes,
    )
    app.add_middleware(HeadMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    return app
