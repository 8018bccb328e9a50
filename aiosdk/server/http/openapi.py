"""What the OpenAPI document says beyond the routes: the layers around them.

FastAPI derives each operation from its route. The idempotency layer and the request-context
layer act on every operation without being part of any route, so what they add is written into
the document here, for every operation they apply to, including routes added later:

- every operation needs a bearer token (the authentication layer checks it, not the route);
- every response carries ``X-Request-ID``;
- every mutating operation takes an ``Idempotency-Key`` header; its responses may be replays
  (``Idempotent-Replayed: true``), and it can answer 409 ``idempotency_in_progress`` (with
  ``Retry-After``) and 422 ``idempotency_key_reused``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .errors import ErrorResponse
from .idempotency import MUTATING_METHODS, REPLAYED_HEADER
from .middleware import REQUEST_ID_HEADER

__all__ = ["ALLOW", "RETRY_AFTER", "WWW_AUTHENTICATE", "describe_layers", "documented_error"]

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}
"""The ``Retry-After`` response header, as declared in the document."""
ALLOW = {
    "description": "Every method the path answers.",
    "schema": {"type": "string"},
}
"""The ``Allow`` response header of a 405."""
WWW_AUTHENTICATE = {"description": "The scheme to authenticate with.", "schema": {"type": "string"}}
"""The ``WWW-Authenticate`` response header of a 401."""

_REQUEST_ID = {
    "description": (
        "The request's id: the client's X-Request-ID when it is 1 to 128 URL-safe characters,"
        " otherwise one the server made. Error bodies carry it too."
    ),
    "schema": {"type": "string"},
}
_REPLAYED = {
    "description": "Present on a replay of the stored answer to an earlier request with the "
    "same Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the request safe to retry: a repeat with the same key (for the same caller) within"
        " 24 hours is not applied again, it gets the first answer replayed. Reusing a key for a"
        " different request is a 422; a repeat while the first still runs is a 409."
    ),
    # Printable ASCII, without leading or trailing spaces (HTTP would strip them).
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$",
    },
}
_IN_PROGRESS = {
    "description": "Conflict; or a request with the same Idempotency-Key is still in progress "
    "(error type idempotency_in_progress: retry after Retry-After)",
    "headers": {"Retry-After": RETRY_AFTER},
    "content": _ERROR_CONTENT,
}
_KEY_REUSED = " Or the Idempotency-Key was used for a different request (idempotency_key_reused)."


def documented_error(
    description: str, headers: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """A FastAPI ``responses=`` entry for an error answer: the error shape, and ``headers``."""
    entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        entry["headers"] = dict(headers)
    return entry


_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API token, a session's access token or the admin token.",
}
_BASIC = {
    "type": "http",
    "scheme": "basic",
    "description": "A username and password, checked on every request (logins without a session).",
}


def describe_layers(
    document: dict[str, Any],
    public_paths: Collection[str] = (),
    optional_paths: Collection[str] = (),
) -> None:
    """Add to ``document``, in place, what the layers around the routes do (see the module);
    operations under ``public_paths`` need no credentials, those under ``optional_paths`` check
    credentials when some are sent."""
    components = document.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes["HTTPBearer"] = _BEARER
    schemes["HTTPBasic"] = _BASIC
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            schemes_accepted: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"HTTPBasic": []}]
            if path in public_paths:
                schemes_accepted = []
            elif path in optional_paths:
                schemes_accepted = [{}, *schemes_accepted]  # ({}: no credentials at all)
            operation["security"] = schemes_accepted
            responses: dict[str, Any] = operation["responses"]
            if method.upper() in MUTATING_METHODS:
                _describe_idempotency(operation, responses)
            for status in responses:
                _add_header(responses, status, REQUEST_ID_HEADER, _REQUEST_ID)


def _describe_idempotency(operation: dict[str, Any], responses: dict[str, Any]) -> None:
    operation["parameters"] = [*operation.get("parameters", ()), _IDEMPOTENCY_KEY]
    responses.setdefault("409", _IN_PROGRESS)
    unprocessable = responses.get("422")
    if unprocessable is not None:
        responses["422"] = {
            **unprocessable,
            "description": unprocessable["description"] + _KEY_REUSED,
        }
    for status in responses:
        if int(status) < 500:  # answers under 500 are stored, and replayed
            _add_header(responses, status, REPLAYED_HEADER, _REPLAYED)


def _add_header(responses: dict[str, Any], status: str, name: str, header: object) -> None:
    # FastAPI shares the dictionaries of router-wide responses between operations: copy.
    response = responses[status]
    responses[status] = {**response, "headers": {**response.get("headers", {}), name: header}}
