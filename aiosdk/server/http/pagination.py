"""Opaque page tokens for keyset pagination ordered by ``(created_at, id)``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from ..errors import InvalidRequestError

__all__ = ["MAX_PAGE_TOKEN_LENGTH", "decode_page_token", "encode_page_token"]

MAX_PAGE_TOKEN_LENGTH = 512
"""Longer page tokens are rejected unread; the server's own are about a hundred characters."""


def encode_page_token(created_at: datetime, row_id: str) -> str:
    """A page token that resumes after the row ``(created_at, row_id)``."""
    payload = json.dumps([created_at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The position a page token resumes after.

    Page tokens come from clients, so anything but a well-formed one (too long, not base64,
    not JSON, nested, a time without an offset or out of range once in UTC, an id holding NUL)
    is an :class:`InvalidRequestError`, never an exception from deeper down.
    """
    position = _decode(token)
    if position is None:
        raise InvalidRequestError("Invalid page_token")
    return position


def _decode(token: str) -> tuple[datetime, str] | None:
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, TypeError, RecursionError):
        return None  # ValueError covers non-ASCII input, bad UTF-8 and bad JSON
    if not (
        isinstance(decoded, list)
        and len(decoded) == 2
        and all(isinstance(part, str) for part in decoded)
    ):
        return None
    created_at, row_id = decoded
    if not row_id or "\x00" in row_id:
        return None
    try:
        position = datetime.fromisoformat(created_at)
        if position.tzinfo is None or position.utcoffset() is None:
            return None
        return position.astimezone(timezone.utc), row_id
    except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        return None
