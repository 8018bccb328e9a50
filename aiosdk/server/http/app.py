"""The FastAPI application of the HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

from ..._version import __version__
from ..state import ServerState
from .authentication import AuthenticationMiddleware
from .errors import install_error_handlers
from .idempotency import IdempotencyMiddleware, IdempotencyStore
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware, RequestTargetMiddleware
from .routes import API_PREFIX, api_router

__all__ = ["OPENAPI_URL", "create_app"]

OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_URL = f"{API_PREFIX}/docs"


def create_app(state: ServerState) -> FastAPI:
    """The HTTP API of a server with ``state``.

    Layers, outermost first: request id, logging and counting; request-target check (no NUL
    characters); body-size limit; bearer authentication (all but the OpenAPI document and its
    docs page); idempotency; routes.
    """
    app = FastAPI(
        title="aiosdk",
        version=__version__,
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.server = state
    install_error_handlers(app)
    app.include_router(api_router)
    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(IdempotencyMiddleware, store=IdempotencyStore(state.sessions))
    app.add_middleware(
        AuthenticationMiddleware, sessions=state.sessions, public_paths={OPENAPI_URL, DOCS_URL}
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=state.limits.max_request_body_bytes)
    app.add_middleware(RequestTargetMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    return app
