"""What a channel request may hold: client ids and message sizes."""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_CLIENT_ID_BYTES", "MAX_MESSAGE_BYTES", "client_id_problem", "message_problem"]

MAX_CLIENT_ID_BYTES = 64
MAX_MESSAGE_BYTES = 32 * 1024


def client_id_problem(client_id: str) -> str | None:
    """Why ``client_id`` is no client id (``None``: it is one)."""
    size = len(client_id.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_CLIENT_ID_BYTES:
        return f"a client id is 1 to {MAX_CLIENT_ID_BYTES} bytes of UTF-8, not {size}"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in client_id):
        return "a client id may not hold control characters"
    return None


def message_problem(data: bytes, text: bool) -> str | None:
    """Why ``data`` is no message (``None``: it is one)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return f"a message is at most {MAX_MESSAGE_BYTES} bytes, not {len(data)}"
    if text:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "a text message must be UTF-8"
    return None
