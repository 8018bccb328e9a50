"""Routers of the HTTP API, mounted under ``/api/v1``."""

from typing import Any

from fastapi import APIRouter, Depends

from ..authentication import bearer_scheme
from ..errors import ErrorResponse
from . import info, tokens

__all__ = ["API_PREFIX", "api_router"]

API_PREFIX = "/api/v1"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Invalid request"),
        (401, "Missing, invalid, expired or revoked token"),
        (422, "Invalid request body or parameters"),
        (500, "Internal server error"),
    ]
}

api_router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(bearer_scheme)], responses=_ERRORS)
api_router.include_router(info.router)
api_router.include_router(tokens.router)
