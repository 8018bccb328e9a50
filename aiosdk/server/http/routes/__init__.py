"""Routers of the HTTP API, mounted under ``/api/v1``."""

from typing import Any

from fastapi import FastAPI

from ..openapi import ALLOW, RETRY_AFTER, WWW_AUTHENTICATE, documented_error
from . import (
    admin,
    arrays,
    auth,
    catalog,
    formats,
    info,
    objects,
    organizations,
    sparse,
    tables,
    tokens,
    users,
)

__all__ = ["API_PREFIX", "ROUTERS", "include_routes"]

API_PREFIX = "/api/v1"

# What any operation can answer, from the layers every request goes through.
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: documented_error(
        "Invalid request: a NUL character in the path or query, an invalid page token or"
        " Idempotency-Key, a value the database refuses"
    ),
    401: documented_error(
        "Missing, invalid, expired or revoked token", {"WWW-Authenticate": WWW_AUTHENTICATE}
    ),
    403: documented_error(
        "The caller may not do this: its token is read-only, or it lacks the role or grant"
    ),
    405: documented_error(
        "The path does not answer this method; Allow lists those it does", {"Allow": ALLOW}
    ),
    413: documented_error(
        "The request body exceeds limits.max_request_body_bytes (limits.max_data_body_bytes on"
        " the data routes)"
    ),
    422: documented_error("Invalid request body or parameters."),
    429: documented_error(
        "Too many failed logins from this account or address (Basic credentials count too);"
        " retry after Retry-After",
        {"Retry-After": RETRY_AFTER},
    ),
    431: documented_error("The request line and header fields exceed limits.max_header_bytes"),
    500: documented_error("Internal server error"),
    503: documented_error(
        "The server is at its connection limit, or the database stayed locked; retry after"
        " Retry-After",
        {"Retry-After": RETRY_AFTER},
    ),
}


ROUTERS = (
    info.router,
    auth.router,
    users.router,
    organizations.router,
    admin.router,
    tokens.router,
    catalog.router,
    arrays.router,
    tables.router,
    sparse.router,
    formats.router,
    objects.router,
)
"""Every router of the API, each mounted under :data:`API_PREFIX`."""


def include_routes(app: FastAPI) -> None:
    """Mount every router under ``/api/v1``, each directly on the app: FastAPI matches a request
    router by router, and each level of nesting costs every request."""
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, responses=_ERRORS)
