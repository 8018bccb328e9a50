"""Opaque page tokens for keyset pagination ordered by ``(created_at, id)``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from .errors import InvalidRequestError

__all__ = ["decode_page_token", "encode_page_token"]


def encode_page_token(created_at: datetime, row_id: str) -> str:
    """A page token that resumes after the row ``(created_at, row_id)``."""
    payload = json.dumps([created_at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The position a page token resumes after; :class:`InvalidRequestError` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, row_id = json.loads(raw)
        position = datetime.fromisoformat(created_at)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise InvalidRequestError("Invalid page_token") from exc
    if not isinstance(row_id, str) or position.tzinfo is None:
        raise InvalidRequestError("Invalid page_token")
    return position.astimezone(timezone.utc), row_id
